// A grpc-js server on 127.0.0.1:0 for the gRPC tests: services given as (definition, handlers)
// pairs with raw Buffer messages (no protobuf); dispose to shut it down at once.
import * as grpc from "@grpc/grpc-js";

/** One service: its definition (paths and codecs) and its handlers by method name. */
export type GrpcService = [definition: unknown, handlers: grpc.UntypedServiceImplementation];

export async function serveGrpc(...services: GrpcService[]) {
  const server = new grpc.Server();
  for (const [definition, handlers] of services) {
    server.addService(definition as grpc.ServiceDefinition, handlers);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  return {
    port,
    [Symbol.asyncDispose]() {
      server.forceShutdown();
      return Promise.resolve();
    },
  };
}
