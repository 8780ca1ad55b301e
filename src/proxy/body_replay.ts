// Request bodies that can be sent again (retries) and response bodies whose end is observed
// (in-flight accounting for load-aware policies). Web streams only.

/** Largest request body kept in memory so the request can be replayed on another target. */
export const REPLAY_CAP = 64 * 1024;

/** A request body that can be handed out again when it was small enough to keep. */
export interface BodySource {
  /** True while another attempt can still get the whole body. */
  readonly replayable: boolean;
  next(): ReadableStream<Uint8Array> | null;
}

/** The source of a request without a body (replayable as nothing). */
export const NO_BODY: BodySource = Object.freeze({ replayable: true, next: () => null });

/**
 * Keeps a small body (≤ REPLAY_CAP, declared or read so far) in memory for replay; a larger one
 * streams once (the bytes already read, then the rest) and the request is not retried.
 */
export async function bodySource(
  body: ReadableStream<Uint8Array> | null,
  headers: Headers,
  wanted: boolean,
): Promise<BodySource> {
  if (!body) return NO_BODY;
  const declared = Number(headers.get("content-length") ?? NaN);
  if (!wanted || declared > REPLAY_CAP) return once(body);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size <= REPLAY_CAP) {
    const r = await reader.read();
    if (r.done) {
      const bytes = concat(chunks, size);
      return { replayable: true, next: () => streamOf([bytes.slice()]) };
    }
    chunks.push(r.value);
    size += r.value.byteLength;
  }
  // Over the cap: replay what was read, then pass the rest through.
  let i = 0;
  return once(
    new ReadableStream<Uint8Array>({
      async pull(c) {
        if (i < chunks.length) return c.enqueue(chunks[i++]);
        const r = await reader.read();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
      cancel: (reason) => reader.cancel(reason),
    }),
  );
}

/** A body that streams once; it can be handed out again only if nobody started reading it. */
function once(body: ReadableStream<Uint8Array>): BodySource {
  return {
    get replayable() {
      return !body.locked;
    },
    next: () => body.locked ? null : body,
  };
}

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(c) {
      for (const x of chunks) c.enqueue(x);
      c.close();
    },
  });
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.byteLength;
  }
  return all;
}

/** Wraps a response so `done` runs once its body has ended, failed or been cancelled. */
export function onBodyEnd(res: Response, done: () => void): Response {
  let called = false;
  const fin = () => {
    if (!called) {
      called = true;
      done();
    }
  };
  const reader = res.body!.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        const r = await reader.read();
        if (r.done) {
          fin();
          c.close();
        } else c.enqueue(r.value);
      } catch (err) {
        fin();
        c.error(err);
      }
    },
    cancel(reason) {
      fin();
      return reader.cancel(reason);
    },
  });
  return new Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
}
