/**
 * The v3 WebSockets with reconnection. Sockets are opened with the URL and WebSocket class
 * of JupyterLab's `ServerConnection` settings, as Lab's own kernel sockets are.
 *
 * A stream that drops (server restart, network loss, overflow) reconnects with a growing
 * delay; a run's stream resumes with `since=<last seq received>`, so nothing is missed, and
 * the all-runs stream tells its listeners to catch up (it has no replay).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ClarionEvent, CloseCode } from './protocol';

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface IStreamOptions {
  settings?: ServerConnection.ISettings;
  /** Delays between reconnection attempts, in ms; the last one repeats. */
  backoff?: number[];
}

const DEFAULT_BACKOFF = [250, 500, 1000, 2000, 5000];

export function socketUrl(settings: ServerConnection.ISettings, path: string, query: Record<string, string> = {}): string {
  const params = { ...query };
  if (settings.appendToken && settings.token) {
    params.token = settings.token;
  }
  const search = Object.entries(params)
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join('&');
  const url = URLExt.join(settings.wsUrl, path);
  return search ? `${url}?${search}` : url;
}

export class EventStream {
  private _socket: WebSocket | null = null;
  private _attempt = 0;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
  private _state: ConnectionState = 'connecting';
  private _hasOpened = false;
  private _event = new Signal<this, ClarionEvent>(this);
  private _stateChanged = new Signal<this, ConnectionState>(this);
  private _reconnected = new Signal<this, void>(this);
  private _finished = new Signal<this, number>(this);
  readonly settings: ServerConnection.ISettings;
  private readonly _backoff: number[];

  /**
   * `path` below the WebSocket base URL (`ws/runs` or `ws/runs/ID/subscribe`); `since` is the
   * position of a run's stream (`null` for the all-runs stream, which has none).
   */
  constructor(
    readonly path: string,
    public since: number | null = null,
    options: IStreamOptions = {}
  ) {
    this.settings = options.settings ?? ServerConnection.makeSettings();
    this._backoff = options.backoff ?? DEFAULT_BACKOFF;
  }

  get event(): ISignal<this, ClarionEvent> {
    return this._event;
  }

  get stateChanged(): ISignal<this, ConnectionState> {
    return this._stateChanged;
  }

  /** Emitted each time the socket opens again after a drop: time to catch up. */
  get reconnected(): ISignal<this, void> {
    return this._reconnected;
  }

  /** The stream ended for good: the run finished (1000) or does not exist (4404). */
  get finished(): ISignal<this, number> {
    return this._finished;
  }

  get state(): ConnectionState {
    return this._state;
  }

  connect(): this {
    if (this._disposed) {
      return this;
    }
    const query: Record<string, string> = this.since === null ? {} : { since: String(this.since) };
    const socket = new this.settings.WebSocket(socketUrl(this.settings, this.path, query));
    this._socket = socket;
    socket.onopen = () => {
      this._attempt = 0;
      this._setState('open');
      if (this._hasOpened) {
        this._reconnected.emit();
      }
      this._hasOpened = true;
    };
    socket.onmessage = (message: MessageEvent) => {
      const event = JSON.parse(message.data as string) as ClarionEvent;
      if (this.since !== null) {
        if (event.seq <= this.since) {
          return; // a replay after a reconnect can repeat what was already seen
        }
        this.since = event.seq;
      }
      this._event.emit(event);
    };
    socket.onclose = (close: CloseEvent) => {
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      if (this._disposed) {
        return;
      }
      if (close.code === CloseCode.done || close.code === CloseCode.not_found) {
        this._setState('closed');
        this._finished.emit(close.code);
        return;
      }
      this._scheduleReconnect();
    };
    return this;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.close();
    }
    this._setState('closed');
    Signal.clearData(this);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  private _scheduleReconnect(): void {
    this._setState('reconnecting');
    const delay = this._backoff[Math.min(this._attempt, this._backoff.length - 1)];
    this._attempt += 1;
    this._timer = setTimeout(() => {
      this._timer = null;
      this.connect();
    }, delay);
  }

  private _setState(state: ConnectionState): void {
    if (state !== this._state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }
}
