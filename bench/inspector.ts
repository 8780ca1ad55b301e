// A connection to a Deno process's inspector (started with --inspect=127.0.0.1:PORT): Chrome
// DevTools Protocol commands sent, their answers awaited. For the bench scripts that read Prox's
// heap (soak.ts: Map and Set sizes; alloc_bytes.ts: sampled allocations).

export interface Inspector {
  send(method: string, params?: unknown): Promise<{ result?: Record<string, unknown> }>;
  close(): void;
}

export async function connectInspector(inspectPort: number): Promise<Inspector> {
  const [target] = await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json();
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((ok) => ws.onopen = ok);
  let id = 0;
  const waiting = new Map<number, (v: { result?: Record<string, unknown> }) => void>();
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    waiting.get(m.id)?.(m);
    waiting.delete(m.id);
  };
  const send = (method: string, params: unknown = {}) =>
    new Promise<{ result?: Record<string, unknown> }>((ok) => {
      waiting.set(++id, ok);
      ws.send(JSON.stringify({ id, method, params }));
    });
  return { send, close: () => ws.close() };
}
