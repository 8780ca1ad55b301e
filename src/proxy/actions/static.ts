// The `static` action: files under a root through the FileStore port. GET and HEAD (OPTIONS
// answers Allow), ETag/Last-Modified with 304 and 412, one byte range (206/416; several ranges
// get the whole file), index file for directories, a 308 to the slash form (route prefix and
// query kept) for directories named without one, optional precompressed `.br`/`.zst`/`.gz` siblings,
// SPA fallback, custom 404 page, directory listings (`browse`), Cache-Control. Dotfiles are
// hidden unless `show_dotfiles` (`/.well-known/` stays visible, RFC 8615). HEAD, 304 and 416
// never open the file.

import {
  acceptedEncodings,
  evaluatePreconditions,
  httpDate,
  ifRangeAllows,
  parseRange,
  weakEtag,
} from "../../domain/conditional.ts";
import { joinPath, stripPrefix } from "../../domain/rewrite.ts";
import { decideCompression, mediaTypeOf } from "../../domain/compress.ts";
import type { CompressPolicy } from "../../domain/compress.ts";
import type { StaticRouteConfig } from "../../config/schema.ts";
import { FileChangedError, type FileStat, type FileStore, HEAD_ROOM } from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse, responseWith } from "../respond.ts";
import { REPRESENTATION } from "../filters/compress.ts";
import type { RepresentingResponse } from "../filters/compress.ts";
import { contentTypeFor } from "./static_types.ts";
import { LISTING_MAX, renderListing } from "../../domain/dir_listing.ts";
import { HeaderList } from "../../domain/header_list.ts";
import { WireResponse } from "../wire_response.ts";

/** Methods a static route answers; everything else gets 405 with this list. */
export const STATIC_ALLOW = "GET, HEAD, OPTIONS";

/** Precompressed siblings we look for, in server preference order, and their file suffixes. */
const CODINGS: Record<string, string> = { br: ".br", zstd: ".zst", gzip: ".gz" };

/** Options of `serveStatic`: the route's settings plus where the request falls under it. */
export interface StaticOptions {
  root: string;
  /** The normalized, still percent-encoded request path after the route prefix ("" or "/…"). */
  relPath: string;
  /** The route prefix (for the directory redirect's Location). */
  prefix: string;
  /** Raw query including `?`, or "" (kept on redirects). */
  query: string;
  files: FileStore;
  requestId: string;
  index?: string;
  spaFallback?: string;
  notFoundPage?: string;
  cacheControl?: string;
  precompressed?: boolean;
  /**
   * Media types served from the identity file even with `precompressed`: a `response_body`
   * rule's `replace` reads them, and cannot see into a coded sibling.
   */
  identityTypes?: (mediaType: string) => boolean;
  showDotfiles?: boolean;
  /** A directory without its index file is answered with a listing of its entries. */
  browse?: boolean;
  /** The route's `compress` (null or absent: it sends files as they are). */
  compress?: CompressPolicy | null;
  /**
   * The request's wall-clock time (ms): no Last-Modified is dated later, whatever the file's
   * mtime says (RFC 9110 §8.8.2.1), and an RFC 850 date's two-digit year is read against it.
   */
  now: number;
  /** Set on the one new attempt made when the file changed between stat and open. */
  again?: boolean;
  /**
   * The listener writes answers itself and nothing on the way needs a Fetch Response: a file read
   * whole is answered as a WireResponse, whose bytes it writes as they are.
   */
  lean?: boolean;
}

/** Decoded path segments, or null when a segment cannot be served safely (→ 400). */
function decodeSegments(relPath: string): string[] | null {
  const out: string[] = [];
  for (const raw of relPath.split("/")) {
    if (raw === "") continue;
    let seg = raw;
    if (raw.includes("%")) {
      try {
        seg = decodeURIComponent(raw);
      } catch {
        return null;
      }
    }
    if (seg === "." || seg === ".." || /[\0/\\]/.test(seg)) return null;
    out.push(seg);
  }
  return out;
}

function isHidden(segments: string[]): boolean {
  return segments.some((s, i) => s.startsWith(".") && !(i === 0 && s === ".well-known"));
}

function configPath(p: string): string {
  return p.replace(/^\/+/, "");
}

/** Serves one request for a static route. */
export async function serveStatic(req: Request, opts: StaticOptions): Promise<Response> {
  if (req.method === "OPTIONS") {
    return new Response(null, { status: 204, headers: { allow: STATIC_ALLOW } });
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    return errorResponse("method_not_allowed", opts.requestId, {
      headers: { allow: STATIC_ALLOW },
    });
  }
  const segments = decodeSegments(opts.relPath);
  if (segments === null) {
    return errorResponse("bad_request", opts.requestId, { message: "Invalid static file path" });
  }
  const slash = opts.relPath.endsWith("/");
  if (!(!opts.showDotfiles && isHidden(segments))) {
    let rel = segments.join("/");
    let st = await opts.files.stat(opts.root, rel);
    let viaIndex = false;
    if (st?.isDirectory) {
      if (!slash) {
        // RFC 9110 §15.4.9: permanent and method-preserving; relative links need the slash.
        // One leading slash only: "//host" would be a protocol-relative redirect elsewhere.
        const path = joinPath(opts.prefix, opts.relPath).replace(/^\/{2,}/, "/");
        const location = path + "/" + opts.query;
        return new Response(null, { status: 308, headers: { location } });
      }
      const index = configPath(opts.index ?? "index.html");
      const dir = rel;
      rel = rel === "" ? index : `${rel}/${index}`;
      st = await opts.files.stat(opts.root, rel);
      viaIndex = true;
      if (!st?.isFile && opts.browse && opts.files.list) {
        const listing = await listDirectory(req, dir, segments, opts);
        if (listing) return listing;
      }
    }
    // A file named with a trailing slash (`/a.txt/`) is not that file.
    if (st?.isFile && (viaIndex || !slash)) {
      return await serveFile(req, rel, st, { ...opts, status: 200 });
    }
  }
  return await notFound(req, opts, segments);
}

/** `browse`: the directory's entries (dotfiles only with `show_dotfiles`), HTML or JSON. */
async function listDirectory(
  req: Request,
  dir: string,
  segments: string[],
  opts: StaticOptions,
): Promise<Response | null> {
  // A name with a backslash is one the route refuses to serve (decodeSegments): no dead link.
  // Left out by the store, so hidden names do not take the places of visible ones.
  const hidden = (name: string) =>
    name.includes("\\") || (!opts.showDotfiles && name.startsWith("."));
  const listed = await opts.files.list!(opts.root, dir, LISTING_MAX, hidden);
  if (!listed) return null;
  const entries = listed.entries.filter((e) => !hidden(e.name));
  const accept = req.headers.get("accept") ?? "";
  const json = /application\/json/i.test(accept) && !/text\/html/i.test(accept);
  const path = joinPath(opts.prefix, segments.join("/")).replace(/\/*$/, "/");
  const { body, contentType } = renderListing({
    path,
    entries,
    truncated: listed.truncated,
    parent: segments.length > 0,
    json,
  });
  const bytes = new TextEncoder().encode(body);
  return new Response(req.method === "HEAD" ? null : bytes, {
    status: 200,
    headers: {
      "content-type": contentType,
      "content-length": String(bytes.byteLength),
      // A listing changes with the directory: revalidated every time, and by Accept.
      "cache-control": "no-cache",
      vary: "Accept",
    },
  });
}

/**
 * SPA fallback applies to page navigations: the client accepts HTML, or the last segment has no
 * extension. `/assets/missing.js` fetched by a script tag stays a 404 instead of becoming HTML.
 */
function wantsPage(req: Request, segments: string[]): boolean {
  const last = segments[segments.length - 1] ?? "";
  return !last.includes(".") || (req.headers.get("accept") ?? "").includes("text/html");
}

async function notFound(
  req: Request,
  opts: StaticOptions,
  segments: string[],
): Promise<Response> {
  if (opts.spaFallback && wantsPage(req, segments)) {
    const rel = configPath(opts.spaFallback);
    const st = await opts.files.stat(opts.root, rel);
    // For a name with an extension, Accept decided: a cache must not hand this page to a script.
    const varyAccept = (segments[segments.length - 1] ?? "").includes(".");
    if (st?.isFile) return await serveFile(req, rel, st, { ...opts, status: 200, varyAccept });
  }
  if (opts.notFoundPage) {
    const rel = configPath(opts.notFoundPage);
    const st = await opts.files.stat(opts.root, rel);
    if (st?.isFile) return await serveFile(req, rel, st, { ...opts, status: 404 });
  }
  return errorResponse("not_found", opts.requestId);
}

/** The precompressed sibling to send instead of `rel`, if enabled, accepted and present. */
async function pickVariant(
  req: Request,
  rel: string,
  opts: StaticOptions,
  o: { evenForRange?: boolean } = {},
): Promise<{ rel: string; st: FileStat; coding: string } | null> {
  if (!opts.precompressed || (req.headers.has("range") && !o.evenForRange)) return null;
  if (opts.identityTypes?.(mediaTypeOf(contentTypeFor(rel)))) return null;
  const codings = acceptedEncodings(req.headers.get("accept-encoding"), Object.keys(CODINGS));
  for (const coding of codings) {
    const st = await opts.files.stat(opts.root, rel + CODINGS[coding]);
    if (st?.isFile) return { rel: rel + CODINGS[coding], st, coding };
  }
  return null;
}

/** Whether the route's `compress` would encode this file's 200 for this request's client. */
function compressedForClient(
  req: Request,
  rel: string,
  size: number,
  opts: StaticOptions,
): boolean {
  if (!opts.compress) return false;
  return decideCompression({
    method: "GET",
    acceptEncoding: req.headers.get("accept-encoding"),
    status: 200,
    contentType: contentTypeFor(rel),
    contentEncoding: null,
    contentLength: String(size),
    cacheControl: opts.cacheControl ?? null,
    hasBody: true,
  }, opts.compress).kind === "encode";
}

async function serveFile(
  req: Request,
  rel: string,
  st: FileStat,
  opts: StaticOptions & { status: 200 | 404; varyAccept?: boolean },
): Promise<Response> {
  const variant = await pickVariant(req, rel, opts);
  const file = variant ?? { rel, st, coding: null };
  // Each content coding is its own representation, with its own tag (RFC 9110 §8.8.3): a .gz
  // and a .br of the same size and mtime must not validate each other.
  const plain = weakEtag(file.st.size, file.st.mtime);
  const etag = file.coding ? `${plain.slice(0, -1)}-${file.coding}"` : plain;
  const v = { etag, mtime: file.st.mtime };
  const fields: [string, string][] = [["etag", etag], ["x-content-type-options", "nosniff"]];
  // An mtime ahead of the clock (a file from a machine whose clock ran fast) is sent as now: a
  // cache given the future date would get 304s for every deploy until that date. The validators
  // compare the real mtime, so it never matches a date sent before it (no stale 304, no 206).
  if (file.st.mtime !== null) {
    const lm = file.st.mtime > opts.now ? opts.now : file.st.mtime;
    fields.push(["last-modified", httpDate(lm)]);
    // Capped at now, it is dated by the answer's own Date: Deno.serve's Date field is refreshed
    // once a second and may still name the second before.
    if (lm === opts.now) fields.push(["date", httpDate(lm)]);
  }
  if (opts.cacheControl && opts.status === 200) fields.push(["cache-control", opts.cacheControl]);
  const vary = opts.precompressed
    ? (opts.varyAccept ? "Accept-Encoding, Accept" : "Accept-Encoding")
    : (opts.varyAccept ? "Accept" : null);
  if (vary) fields.push(["vary", vary]);
  if (opts.status === 404) fields.push(["cache-control", "no-store"]);

  if (opts.status === 200) {
    const pre = evaluatePreconditions(req.headers, v, { now: opts.now });
    if (pre === "not_modified") {
      const res: RepresentingResponse = responseWith(null, { status: 304 }, fields);
      // For `compress`: the Vary and ETag of the 200 depend on what it would have been.
      res[REPRESENTATION] = {
        contentType: contentTypeFor(rel),
        contentEncoding: file.coding,
        length: file.st.size,
      };
      return res;
    }
    if (pre === "failed") {
      return errorResponse("bad_request", opts.requestId, {
        status: 412,
        message: "Precondition failed",
      });
    }
  }
  fields.push(["content-type", contentTypeFor(rel)]);
  if (file.coding) fields.push(["content-encoding", file.coding]);

  const size = file.st.size;
  let range = { start: 0, end: size - 1 };
  let status: number = opts.status;
  if (opts.status === 200) {
    // Ranges are served of the identity file only: a compressed answer offers none.
    if (!file.coding) fields.push(["accept-ranges", "bytes"]);
    const ifRange = req.headers.get("if-range");
    // An If-Range date cannot tell the identity file from a compressed sibling of the same mtime
    // this client would have been sent: resumed with identity bytes, its download would be
    // corrupt. The whole file then, as for a validator that does not match.
    const dateOfSibling = ifRange !== null && !/^\s*(W\/)?"/.test(ifRange) &&
      req.headers.has("range") &&
      await pickVariant(req, rel, opts, { evenForRange: true }) !== null;
    // The same goes for the file's own tag and date when the route compresses its 200 for this
    // client: the compressed answer carries both.
    const asked = req.method === "GET" && !dateOfSibling &&
        !(ifRange !== null && compressedForClient(req, rel, size, opts)) &&
        ifRangeAllows(ifRange, v, opts.now)
      ? parseRange(req.headers.get("range"), size)
      : { kind: "full" as const };
    if (asked.kind === "unsatisfiable") {
      return new Response(null, {
        status: 416,
        headers: { "content-range": `bytes */${size}`, "cache-control": "no-store" },
      });
    }
    if (asked.kind === "range") {
      range = { start: asked.start, end: asked.end };
      status = 206;
      fields.push(["content-range", `bytes ${range.start}-${range.end}/${size}`]);
    }
  }
  fields.push(["content-length", String(range.end - range.start + 1)]);
  if (req.method === "HEAD") return responseWith(null, { status }, fields);
  let body;
  const room = opts.lean ? HEAD_ROOM : 0;
  try {
    body = size === 0
      ? null
      : await opts.files.open(opts.root, file.rel, range, file.st.handle, room);
  } catch (err) {
    // Overwritten in place between stat and open (a deploy copying over it): nothing has gone
    // out yet, so answer once more from the file as it is now instead of failing with a 500.
    if (!(err instanceof FileChangedError) || opts.again) throw err;
    const { status: _status, varyAccept: _vary, ...base } = opts;
    return await serveStatic(req, { ...base, again: true });
  }
  if (body === null && size !== 0) return errorResponse("not_found", opts.requestId);
  if (opts.lean && body instanceof Uint8Array) {
    const h = new HeaderList();
    for (let i = 0; i < fields.length; i++) h.append(fields[i][0], fields[i][1]);
    // The room is there only if the store left it (ports.ts FileStore.open).
    const free = body.byteOffset >= room ? room : 0;
    return new WireResponse(body, status, "", h, undefined, free) as unknown as Response;
  }
  return responseWith(body, { status }, fields);
}

/** The pipeline's entry: a static route's settings applied to the current request. */
export async function staticAction(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: StaticRouteConfig,
): Promise<Response> {
  const prefix = ctx.route?.prefix ?? "/";
  return await serveStatic(ctx.req, {
    root: route.root,
    relPath: stripPrefix(ctx.path, prefix),
    prefix,
    query: ctx.query,
    files: deps.files,
    requestId: ctx.requestId,
    now: ctx.startWall,
    index: route.index,
    spaFallback: route.spa_fallback,
    notFoundPage: route.not_found_page,
    cacheControl: route.cache_control,
    precompressed: route.precompressed,
    identityTypes: replaceTypes(ctx),
    showDotfiles: route.show_dotfiles,
    browse: route.browse,
    compress: deps.compressor ? ctx.route?.compress : null,
    lean: ctx.info.writesItself === true && ctx.route?.compress === null &&
      !ctx.route.rules.responseBody && !ctx.snapshot.hasErrorPages,
  });
}

/** The types a route's `replace` rule reads, if it has one. */
function replaceTypes(ctx: RequestContext): ((mediaType: string) => boolean) | undefined {
  const body = ctx.route?.rules.responseBody?.body;
  return body?.kind === "replace" ? body.types : undefined;
}
