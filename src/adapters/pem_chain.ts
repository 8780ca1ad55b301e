// A PEM certificate chain that the TLS listener can load: rustls refuses the whole file when one
// block is cut short or does not decode, so a truncated chain must be caught before it is served.

import { X509Certificate } from "node:crypto";

/** True when `pem` is one or more complete certificates, each of which decodes. */
export function wholeChain(pem: string): boolean {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const begins = pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  if (blocks.length === 0 || begins !== blocks.length) return false;
  return blocks.every((b) => {
    try {
      new X509Certificate(b);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * The first PEM block whose label ends with `label` ("PRIVATE KEY" also finds "EC PRIVATE KEY"),
 * or null. node:crypto on Deno refuses a file whose first block is another one (a certificate
 * and its key in one file, which the listener accepts).
 */
export function pemBlock(pem: string, label: string): string | null {
  const re = new RegExp(`-----BEGIN ([A-Z0-9 ]*)${label}-----[\\s\\S]*?-----END \\1${label}-----`);
  return pem.match(re)?.[0] ?? null;
}
