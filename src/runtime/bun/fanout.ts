// Fan-out on Bun through its native topics: each hubbub topic has a twin among Bun's (uWebSockets'
// topic tree), which a socket is in while it holds the hubbub topic, so that a publication is one
// `server.publish` (the message encoded and framed once, in native code) instead of a `ws.send`
// per socket. The core still decides who gets each publication and counts it (hub.ts,
// #publishNative); Bun only carries it. Replays and other sends to one socket stay `ws.send`:
// uWebSockets writes a socket's queued topic messages before a direct send, so order holds.
import type { FanOut, MessageData, SocketLike } from '../../contracts.ts';
import type { BunServer, BunServerWebSocket } from './api.ts';

/**
 * Before every twin's name: a control character, which no hubbub topic may hold (isValidTopic), so
 * no hubbub topic's twin is another's, and an application sharing the Bun server with its own
 * `ws.subscribe` topics (printable names) cannot meet them by accident.
 */
export const NATIVE_TOPIC_PREFIX = '\u0000hubbub:';

type Socket = BunServerWebSocket<unknown>;

/** The fast path; `server` is read at publish time (Bun.serve returns it after the app is built). */
export function createBunFanOut(server: () => BunServer | undefined): FanOut<MessageData> {
  return {
    prepare: (data) => data,
    sendPrepared: (socket, data) => void socket.send(data),
    topics: {
      subscribe: (socket: SocketLike, topic: string) => void (socket as unknown as Socket).subscribe(NATIVE_TOPIC_PREFIX + topic),
      // A no-op on a socket Bun has closed (it left every topic then).
      unsubscribe: (socket: SocketLike, topic: string) => void (socket as unknown as Socket).unsubscribe(NATIVE_TOPIC_PREFIX + topic),
      publish(topic: string, data: MessageData, except?: SocketLike) {
        const name = NATIVE_TOPIC_PREFIX + topic;
        // Uncompressed, as hubbub's ws.send is (Bun compresses a send only when asked).
        if (except) (except as unknown as Socket).publish(name, data);
        else server()?.publish(name, data);
      },
    },
  };
}
