// Content-Type of a static file from its extension: hono's table (web pages, scripts, fonts, the
// common images, audio and video) plus the types it lacks that sites commonly serve (media
// playlists and subtitles, more audio and video containers, Markdown, YAML, archives, office
// documents, feeds). Names are media types from the IANA registry where one exists; the rest
// are what browsers and players expect. Unknown extensions are application/octet-stream.

import { getMimeType } from "hono/utils/mime";

const UTF8 = "; charset=utf-8";

/** Extensions (lower case) hono does not know, and their types. */
const MORE: Record<string, string> = {
  // Audio and video: without a type a browser downloads the file instead of playing it.
  m4a: "audio/mp4",
  m4v: "video/mp4",
  mov: "video/quicktime",
  mkv: "video/x-matroska",
  ogg: "audio/ogg",
  wav: "audio/wav",
  flac: "audio/flac",
  // Streaming manifests and captions (a <track> needs text/vtt).
  m3u8: "application/vnd.apple.mpegurl",
  mpd: "application/dash+xml",
  vtt: "text/vtt" + UTF8,
  // Text formats.
  md: "text/markdown" + UTF8,
  markdown: "text/markdown" + UTF8,
  log: "text/plain" + UTF8,
  yaml: "application/yaml",
  yml: "application/yaml",
  toml: "application/toml",
  cjs: "text/javascript" + UTF8,
  vcf: "text/vcard" + UTF8,
  rss: "application/rss+xml",
  atom: "application/atom+xml",
  geojson: "application/geo+json",
  // Images.
  apng: "image/apng",
  jxl: "image/jxl",
  heic: "image/heic",
  heif: "image/heif",
  // Archives and packages.
  tar: "application/x-tar",
  tgz: "application/gzip",
  bz2: "application/x-bzip2",
  xz: "application/x-xz",
  zst: "application/zstd",
  "7z": "application/x-7z-compressed",
  jar: "application/java-archive",
  apk: "application/vnd.android.package-archive",
  deb: "application/vnd.debian.binary-package",
  // Documents.
  doc: "application/msword",
  xls: "application/vnd.ms-excel",
  ppt: "application/vnd.ms-powerpoint",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  pptx: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
  odt: "application/vnd.oasis.opendocument.text",
  ods: "application/vnd.oasis.opendocument.spreadsheet",
  odp: "application/vnd.oasis.opendocument.presentation",
};

/** The Content-Type for a file name (the last dot decides; case does not matter). */
export function contentTypeFor(name: string): string {
  const known = getMimeType(name);
  if (known) return known;
  const slash = name.lastIndexOf("/");
  const dot = name.lastIndexOf(".");
  if (dot <= slash) return "application/octet-stream";
  return MORE[name.slice(dot + 1).toLowerCase()] ?? "application/octet-stream";
}
