// The little of Bun's API the Bun runtime files use (tsc for Node has no Bun types; Bun ignores these).

/** Bun's ServerWebSocket. With `bufferedAmount` added (below) it is the core's SocketLike as it is. */
export interface BunServerWebSocket<T> {
  readonly data: T;
  readonly readyState: number;
  send(data: string | Uint8Array, compress?: boolean): number;
  close(code?: number, reason?: string): void;
  terminate(): void;
  ping(data?: string | Uint8Array): number;
  getBufferedAmount(): number;
  /** Bun's native topics (uWebSockets' topic tree). */
  subscribe(topic: string): void;
  unsubscribe(topic: string): void;
  /** To every subscriber of `topic` but this socket; 0 if nothing was sent. */
  publish(topic: string, data: string | Uint8Array, compress?: boolean): number;
}

export interface BunServer {
  readonly port: number;
  readonly hostname: string;
  upgrade(request: Request, options?: { data?: unknown; headers?: HeadersInit }): boolean;
  requestIP(request: Request): { address: string; family: string; port: number } | null;
  stop(closeActiveConnections?: boolean): Promise<void>;
  /** To every subscriber of `topic`; 0 if nothing was sent (or no subscriber). */
  publish(topic: string, data: string | Uint8Array, compress?: boolean): number;
}

export interface BunWebSocketHandler<T> {
  open?(ws: BunServerWebSocket<T>): void;
  message?(ws: BunServerWebSocket<T>, message: string | Uint8Array): void;
  close?(ws: BunServerWebSocket<T>, code: number, reason: string): void;
  pong?(ws: BunServerWebSocket<T>, data: Uint8Array): void;
  maxPayloadLength?: number;
  idleTimeout?: number;
  sendPings?: boolean;
  backpressureLimit?: number;
  closeOnBackpressureLimit?: boolean;
  perMessageDeflate?: boolean;
}

export interface BunServeOptions<T> {
  port?: number;
  hostname?: string;
  /** PEM certificate and key: the server speaks https:// and wss://. */
  tls?: { cert: string; key: string };
  /** Seconds an HTTP connection may stay silent, a pending response included (not WebSockets). 0 = never. */
  idleTimeout?: number;
  fetch(request: Request, server: BunServer): Response | Promise<Response | undefined> | undefined;
  error?(error: Error): Response | Promise<Response>;
  websocket?: BunWebSocketHandler<T>;
}

/** The `Bun` global (declared where it is used: a type cannot be imported as a value). */
export interface BunGlobal {
  serve<T>(options: BunServeOptions<T>): BunServer;
  gc(force: boolean): void;
}
