// Bytes written in hex in the config (a tcp health check's `send_hex` and `expect_hex`): pairs of
// hex digits, with spaces between them allowed for reading ("00000008 04d2162f").

/** Why `text` is not hex bytes, or null when it is. */
export function hexProblem(text: string): string | null {
  const digits = text.replace(/ /g, "");
  const bad = /[^0-9A-Fa-f]/.exec(digits);
  if (bad) return `has ${JSON.stringify(bad[0])}, which is not a hex digit`;
  if (digits.length === 0) return "holds no bytes";
  if (digits.length % 2 !== 0) return `has ${digits.length} digits: a byte takes two`;
  return null;
}

/** The bytes of hex text `hexProblem` accepts. */
export function hexBytes(text: string): Uint8Array {
  const digits = text.replace(/ /g, "");
  const out = new Uint8Array(digits.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes as hex text, two digits each. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Where `needle` first occurs in `hay`, or -1. */
export function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  if (needle.length === 0) return 0;
  const first = needle[0];
  for (let i = hay.indexOf(first); i >= 0 && i + needle.length <= hay.length;) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
    i = hay.indexOf(first, i + 1);
  }
  return -1;
}
