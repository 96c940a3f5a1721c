// The handler's authenticate hook, guarded: what it returns decides, a throw is logged and answered
// 500, and every refusal is counted as `unauthorized`. Runtime-free (web Request and Response).
import type { Handler, Principal } from '../contracts.ts';
import type { Logger } from '../log.ts';
import { refusalResponse, type Admission } from './admission.ts';

const failed = () => new Response('authentication failed\n', { status: 500, headers: { Connection: 'close' } });

/**
 * A Principal admits. A Response of 4xx/5xx is the hook's own refusal, passed on as it is; anything
 * else the hook returns is refused with 401.
 */
export async function authenticate(
  hook: NonNullable<Handler['authenticate']>,
  request: Request,
  remoteAddress: string,
  admission: Admission,
  log: Logger,
  principal?: Principal,
): Promise<Principal | Response> {
  let verdict: unknown;
  try {
    verdict = await hook(request, principal ? { remoteAddress, principal } : { remoteAddress });
  } catch (error) {
    log.error('handler.error', { stage: 'authenticate', remoteAddress, error });
    admission.refuse('unauthorized');
    return failed();
  }
  if (verdict instanceof Response) {
    admission.refuse('unauthorized');
    if (verdict.status < 400) {
      log.error('handler.error', { stage: 'authenticate', remoteAddress, error: `refusal answer must be 4xx/5xx, got ${verdict.status}` });
      return failed();
    }
    return verdict;
  }
  if (verdict && typeof verdict === 'object' && typeof (verdict as Principal).id === 'string') return verdict as Principal;
  return refusalResponse(admission.refuse('unauthorized'));
}
