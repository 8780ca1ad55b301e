// A PEM certificate chain that the TLS listener can load: rustls refuses the whole file when one
// block is cut short or does not decode, so a truncated chain must be caught before it is served.

import { X509Certificate } from "node:crypto";
import type { CertificateNames } from "../config/cert_names.ts";

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

/** The DNS names and IP addresses of the subjectAltName of the first certificate in `pem`. */
export function certificateNames(pem: string): CertificateNames {
  const block = pemBlock(pem, "CERTIFICATE");
  let san = "";
  try {
    san = block ? new X509Certificate(block).subjectAltName ?? "" : "";
  } catch {
    // Not a certificate node:crypto reads: no names (the listener's bind says what is wrong).
  }
  const entries = san.split(", ");
  const of = (prefix: string) =>
    entries.filter((e) => e.startsWith(prefix)).map((e) => e.slice(prefix.length));
  return { dns: of("DNS:"), ip: of("IP Address:") };
}
