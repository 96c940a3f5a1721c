// The backplane's wire format: a versioned JSON envelope, and the broker channel name of a topic.
// Runtime-free.
import type { MessageData } from '../contracts.ts';

/**
 * The envelope on the wire, versioned: `{"v":1,"n":nodeId,"t":topic,"d":text}` or with `"b":base64`
 * for binary data. A message that does not parse into this is malformed.
 */
interface Envelope {
  v: 1;
  n: string;
  t: string;
  d?: string;
  b?: string;
}

export function encodeEnvelope(nodeId: string, topic: string, data: MessageData): string {
  const env: Envelope = typeof data === 'string' ? { v: 1, n: nodeId, t: topic, d: data } : { v: 1, n: nodeId, t: topic, b: toBase64(data) };
  return JSON.stringify(env);
}

export function decodeEnvelope(raw: string): { node: string; topic: string; data: MessageData } | undefined {
  let env: Partial<Envelope>;
  try {
    env = JSON.parse(raw) as Partial<Envelope>;
  } catch {
    return undefined;
  }
  if (typeof env !== 'object' || env === null || env.v !== 1 || typeof env.n !== 'string' || typeof env.t !== 'string') return undefined;
  if (typeof env.d === 'string') return { node: env.n, topic: env.t, data: env.d };
  if (typeof env.b === 'string') {
    const bytes = fromBase64(env.b);
    return bytes ? { node: env.n, topic: env.t, data: bytes } : undefined;
  }
  return undefined;
}

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array | undefined {
  try {
    const binary = atob(text);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
}

/** Broker channel / subject of a topic. Topic names may hold any character; brokers get a safe token. */
export function channelOf(prefix: string, topic: string): string {
  return `${prefix}${btoa(String.fromCharCode(...new TextEncoder().encode(topic))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
}
