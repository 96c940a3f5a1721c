// The backplane's wire format: a versioned JSON envelope, and the broker channel name of a topic.
// Runtime-free.
import type { MessageData } from '../contracts.ts';

/**
 * The envelope on the wire, versioned: `{"v":1,"n":nodeId,"t":topic,"d":text}` or with `"b":base64`
 * for binary data. With positions kept in the broker (Redis), the store puts the publication's
 * offset and its stream's epoch first: `{"v":1,"o":42,"e":"k3…","n":…}`. A message that does not
 * parse into this is malformed.
 */
interface Envelope {
  v: 1;
  o?: number;
  e?: string;
  n: string;
  t: string;
  /** A connection id that does not get it (`publish`'s `except`). */
  x?: string;
  /** A presence event instead of a publication: a member joined (`j`) or left (`l`) the topic; `d` is the member as JSON. */
  k?: 'j' | 'l';
  d?: string;
  b?: string;
}

export interface DecodedEnvelope {
  node: string;
  topic: string;
  data: MessageData;
  /** Present when the store gave the publication its position. */
  offset?: number;
  epoch?: string;
  except?: string;
  /** A presence event (`data` is the member as JSON), not a publication. */
  event?: 'join' | 'leave';
}

export function encodeEnvelope(nodeId: string, topic: string, data: MessageData, except?: string): string {
  const env: Envelope = { v: 1, n: nodeId, t: topic };
  if (except !== undefined) env.x = except;
  if (typeof data === 'string') env.d = data;
  else env.b = toBase64(data);
  return JSON.stringify(env);
}

/** A presence event for the other nodes: `member` joined or left `topic` on node `nodeId`. */
export function encodePresenceEvent(nodeId: string, topic: string, event: 'join' | 'leave', member: object): string {
  const env: Envelope = { v: 1, n: nodeId, t: topic, k: event === 'join' ? 'j' : 'l', d: JSON.stringify(member) };
  return JSON.stringify(env);
}

/** The envelope without its opening `{"v":1,`: the store writes that, with the position, in front. */
export function envelopeTail(nodeId: string, topic: string, data: MessageData, except?: string): string {
  return encodeEnvelope(nodeId, topic, data, except).slice('{"v":1,'.length);
}

export function decodeEnvelope(raw: string): DecodedEnvelope | undefined {
  let env: Partial<Envelope>;
  try {
    env = JSON.parse(raw) as Partial<Envelope>;
  } catch {
    return undefined;
  }
  if (typeof env !== 'object' || env === null || env.v !== 1 || typeof env.n !== 'string' || typeof env.t !== 'string') return undefined;
  let data: MessageData | undefined;
  if (typeof env.d === 'string') data = env.d;
  else if (typeof env.b === 'string') data = fromBase64(env.b);
  if (data === undefined) return undefined;
  const decoded: DecodedEnvelope = { node: env.n, topic: env.t, data };
  if (typeof env.x === 'string') decoded.except = env.x;
  if (env.k !== undefined) {
    if ((env.k !== 'j' && env.k !== 'l') || typeof data !== 'string') return undefined;
    decoded.event = env.k === 'j' ? 'join' : 'leave';
  }
  if (env.o !== undefined || env.e !== undefined) {
    if (!Number.isSafeInteger(env.o) || (env.o as number) < 1 || typeof env.e !== 'string') return undefined;
    decoded.offset = env.o;
    decoded.epoch = env.e;
  }
  return decoded;
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

/** A topic as a token brokers and keys take: base64url of its UTF-8 (topic names may hold any character). */
export function topicToken(topic: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(topic))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Broker channel / subject of a topic. */
export function channelOf(prefix: string, topic: string): string {
  return `${prefix}${topicToken(topic)}`;
}
