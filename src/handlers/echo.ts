// The seed's handler: every message comes back as `Server received: <msg>`. Runtime-free.
import type { Handler } from '../contracts.ts';

const encoder = new TextEncoder();
const PREFIX = 'Server received: ';
const PREFIX_BYTES = encoder.encode(PREFIX);

/** The seed's behaviour: every message comes back as `Server received: <msg>`, binary stays binary. */
export const echoHandler: Handler = {
  onMessage(ctx, data) {
    if (typeof data === 'string') {
      ctx.send(PREFIX + data);
      return;
    }
    const reply = new Uint8Array(PREFIX_BYTES.length + data.byteLength);
    reply.set(PREFIX_BYTES, 0);
    reply.set(data, PREFIX_BYTES.length);
    ctx.send(reply);
  },
};
