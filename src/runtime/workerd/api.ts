// The little of the Workers API the workerd runtime files use (tsc for Node has no Cloudflare types).

/** workerd's WebSocket: the server half of a WebSocketPair, which the object accepts and keeps. */
export interface WorkerWebSocket {
  readonly readyState: number;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  /** Hibernation API: up to 2,048 bytes (structured clone) that outlive the object. */
  serializeAttachment(value: unknown): void;
  deserializeAttachment(): unknown;
}

/** The `WebSocketPair` global (declared where it is used: a type cannot be imported as a value). */
export type WebSocketPairConstructor = new () => { 0: WorkerWebSocket; 1: WorkerWebSocket };

export interface DurableObjectState {
  acceptWebSocket(ws: WorkerWebSocket, tags?: string[]): void;
  getWebSockets(tag?: string): WorkerWebSocket[];
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
}

export interface DurableObjectId {
  toString(): string;
}

export interface DurableObjectStub {
  fetch(request: Request): Promise<Response>;
}

export interface DurableObjectNamespace {
  idFromName(name: string): DurableObjectId;
  get(id: DurableObjectId): DurableObjectStub;
}

/** The Worker's environment: the Durable Object binding and the vars (HUBBUB_* options). */
export interface HubEnv {
  readonly HUB: DurableObjectNamespace;
  /** `true`: `?room=<name>` picks the object (the limit is then per room). @default false */
  readonly HUBBUB_ROOMS?: string;
  readonly [name: string]: unknown;
}
