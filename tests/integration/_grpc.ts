// A grpc-js server on 127.0.0.1:0 for the gRPC tests: services given as (definition, handlers)
// pairs with raw Buffer messages (no protobuf); dispose to shut it down at once. Also the raw Echo
// service's definition, and a node:http2 upstream that echoes bodies and ends with trailers.
import http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";

const same = (b: Buffer) => b;
/** /test.Echo/Echo, unary, with raw Buffer messages. */
export const ECHO = {
  echo: {
    path: "/test.Echo/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: same,
    requestDeserialize: same,
    responseSerialize: same,
    responseDeserialize: same,
  },
};

/**
 * A node:http2 upstream (h2c): each request's body streamed back, then trailers, `x-bytes` (its
 * length) and `extra`; `seen` keeps the request heads.
 */
export function trailerUpstream(extra: Record<string, string> = {}) {
  const server = http2.createServer();
  const seen: http2.IncomingHttpHeaders[] = [];
  server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    seen.push(headers);
    let n = 0;
    stream.respond({ ":status": 200, "content-type": "application/octet-stream" }, {
      waitForTrailers: true,
    });
    stream.on("wantTrailers", () => stream.sendTrailers({ "x-bytes": String(n), ...extra }));
    stream.on("data", (c: Uint8Array) => {
      n += c.length;
      stream.write(c);
    });
    stream.on("end", () => stream.end());
  });
  const listening = new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  return {
    listening,
    seen,
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

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
