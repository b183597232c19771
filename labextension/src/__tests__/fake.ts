/**
 * A stand-in for the Jupyter server behind `ServerConnection`: the real `ClarionApi` and
 * `EventStream` run against it through the settings' `fetch` and `WebSocket` hooks, the
 * same hooks Lab's own services expose for this.
 */
import { ServerConnection } from '@jupyterlab/services';

export interface Recorded {
  method: string;
  url: string;
  headers: Headers;
  body: any;
}

type Handler = (request: Recorded) => { status?: number; json?: unknown; text?: string } | undefined;

export class FakeServer {
  requests: Recorded[] = [];
  handlers: [string, RegExp, Handler][] = [];

  on(method: string, path: RegExp, handler: Handler): this {
    this.handlers.unshift([method, path, handler]);
    return this;
  }

  settings(baseUrl = 'http://127.0.0.1:8888/user/test/'): ServerConnection.ISettings {
    return ServerConnection.makeSettings({
      baseUrl,
      wsUrl: baseUrl.replace(/^http/, 'ws'),
      token: 'secret',
      appendToken: true,
      fetch: (input: RequestInfo, init?: RequestInit) => this.fetch(input as Request, init),
      WebSocket: FakeSocket as unknown as typeof WebSocket
    });
  }

  private async fetch(input: Request, init?: RequestInit): Promise<Response> {
    const request = input instanceof Request ? input : new Request(input as string, init);
    const body = request.method === 'GET' ? null : await request.clone().text();
    const recorded: Recorded = { method: request.method, url: request.url, headers: request.headers, body };
    this.requests.push(recorded);
    const path = new URL(request.url).pathname;
    for (const [method, pattern, handler] of this.handlers) {
      if (method === request.method && pattern.test(path)) {
        const answer = handler(recorded);
        if (answer) {
          const text = answer.text ?? JSON.stringify(answer.json ?? null);
          return new Response(answer.status === 204 ? null : text, { status: answer.status ?? 200 });
        }
      }
    }
    return new Response('<html>404: Not Found</html>', { status: 404 });
  }
}

/** A WebSocket the test drives: `FakeSocket.last.receive(event)`, `.drop(code)`. */
export class FakeSocket {
  static all: FakeSocket[] = [];
  static get last(): FakeSocket {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  onopen: ((e: any) => void) | null = null;
  onmessage: ((e: any) => void) | null = null;
  onclose: ((e: any) => void) | null = null;
  onerror: ((e: any) => void) | null = null;
  closed = false;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }

  open(): void {
    this.onopen?.({});
  }

  receive(message: unknown): void {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  drop(code = 1006): void {
    this.closed = true;
    this.onclose?.({ code, reason: '' });
  }

  close(): void {
    this.closed = true;
  }
}
