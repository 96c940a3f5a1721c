// The certificate and key of `--tls-cert` / `--tls-key`, read once when a server starts (Node,
// Deno and Bun all have node:fs and node:crypto). A file that is missing, unreadable or not what it
// should be is a startup error naming the option and the path (the CLI exits 2), not a listener that
// fails later, or one that each runtime explains in its own words.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { HubError } from '../errors.ts';
import { optionSpecs, type HubOptions } from '../options.ts';

/** PEM text, as every runtime's TLS server takes it. */
export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
}

/** The PEM files of `tlsCert` and `tlsKey`, checked (each parses, the key is the certificate's); undefined without TLS. */
export function readTls(options: Pick<HubOptions, 'tlsCert' | 'tlsKey'>): TlsFiles | undefined {
  if (!options.tlsCert && !options.tlsKey) return undefined;
  const cert = readPem('tlsCert', options.tlsCert);
  const key = readPem('tlsKey', options.tlsKey);
  const certificate = parse('tlsCert', options.tlsCert, 'not a PEM certificate', () => new X509Certificate(cert));
  const privateKey = parse('tlsKey', options.tlsKey, 'not a PEM private key (an encrypted key is not supported)', () => createPrivateKey(key));
  if (!certificate.checkPrivateKey(privateKey)) {
    throw fileError('tlsKey', options.tlsKey, `not the private key of ${optionSpecs.tlsCert.flag} ${JSON.stringify(options.tlsCert)}`);
  }
  return { cert, key };
}

function fileError(option: 'tlsCert' | 'tlsKey', path: string, what: string): HubError {
  return new HubError('ERR_INVALID_OPTION', `${optionSpecs[option].flag} ${JSON.stringify(path)}: ${what}`);
}

function readPem(option: 'tlsCert' | 'tlsKey', path: string): string {
  if (!path) throw fileError(option, path, 'no file given');
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw fileError(option, path, `cannot read the file (${(error as Error).message})`);
  }
}

function parse<T>(option: 'tlsCert' | 'tlsKey', path: string, what: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw fileError(option, path, `${what} (${(error as Error).message})`);
  }
}
