// The listeners' TLS material, for the composition root (server.ts): certificate files, or an ACME
// controller started, reconfigured and stopped as the config changes; the plain-HTTP listener's
// handler (redirect to HTTPS, and the HTTP-01 challenges); the expiry metric of the certificate
// in use.

import type { Config } from "./config/schema.ts";
import type { Handler, Logger, Metrics } from "./ports.ts";
import {
  listenerPlans,
  readClientAuth,
  readSniFiles,
  readTlsFiles,
} from "./adapters/listener_set.ts";
import type { ListenerPlan } from "./adapters/listener_set.ts";
import { certificateNotAfter } from "./adapters/admin_status.ts";
import { CHALLENGE_PREFIX, startAcme } from "./adapters/acme.ts";
import type { AcmeConfig, AcmeController, AcmeTuning } from "./adapters/acme.ts";
import { createOnDemand } from "./adapters/acme_on_demand.ts";
import type { OnDemandCertificates } from "./adapters/acme_on_demand.ts";
import type { OnDemandHook } from "./adapters/h1/server.ts";
import { redirectHandler } from "./adapters/https_redirect.ts";
import { hostTaken, parseRouteKey } from "./domain/router.ts";

/** What the certificates need from the server. */
export interface CertificateDeps {
  logger: Logger;
  metrics: Metrics;
  acme?: AcmeTuning;
  /** The handler of the main listener. */
  serve: Handler;
  /** The port HTTPS is served on now (where plain HTTP redirects to). */
  httpsPort: () => number;
  /** ACME has issued a new certificate: the server puts it on its listeners. */
  onCertificate: () => void;
  /**
   * Adds metrics and access lines to the plain-HTTP listener's handler, and makes the answer
   * (with the operator's error page) for a ProxyError it throws.
   */
  observe: (h: Handler) => Handler;
}

/** The TLS side of the listeners, following the config. */
export interface Certificates {
  /** The ACME controller while `tls.acme` is enabled. */
  readonly acme: AcmeController | null;
  /** The on-demand certificates while `tls.acme.on_demand` is set. */
  readonly onDemand: OnDemandCertificates | null;
  /**
   * Starts, reconfigures or stops ACME for a config about to be applied, before its listeners
   * bind (and for the serving config again when that one is rejected).
   */
  follow(c: Config): Promise<void>;
  /** The listeners a config asks for, with their TLS material read from disk (or from ACME). */
  plansFor(c: Config): Promise<ListenerPlan[]>;
  /**
   * A config now serves with these plans: its expiry metric, redirect status. Returns a line for
   * the reload's changes when the main listener's certificate, or a tls.sni one of the same file,
   * is another than before, else null.
   */
  applied(c: Config, plans: ListenerPlan[]): string | null;
  close(): Promise<void>;
}

const acmeOf = (c: Config): AcmeConfig | null => c.tls?.acme?.enabled ? c.tls.acme : null;

/** Whether a route of `c` takes requests for a host (route keys' hosts and `hosts` entries). */
function routedHosts(c: Config): (host: string) => boolean {
  return hostTaken(
    Object.entries(c.routes).map(([key, route]) => {
      const own = parseRouteKey(key).host;
      return [...(own ? [own] : []), ...(route.hosts ?? [])];
    }),
  );
}

/** The main listener's certificate and key in a set of plans (none without TLS). */
export function mainTls(plans: ListenerPlan[]): { cert?: string; key?: string } {
  return plans.find((p) => p.id === "main") ?? {};
}

/** The certificates of a server that starts with `initial` (ACME starts on `follow`). */
export function createCertificates(initial: Config, deps: CertificateDeps): Certificates {
  const { logger } = deps;
  // ACME: a stored certificate is there at once; without one HTTPS starts when it is issued.
  let acme: AcmeController | null = null;
  let onDemand: OnDemandCertificates | null = null;
  // One hook for the server's life: listeners keep it across reloads, and it asks the keeper
  // of the config applied now.
  const demandHook: OnDemandHook = {
    certificate: (name) => onDemand?.certificate(name) ?? null,
    max: () => onDemand?.max() ?? 1,
  };
  let redirectStatus = initial.http_redirect?.status_code ?? 308;
  /** Whether a route of the config serving now takes a host: only those are redirected. */
  let routed = routedHosts(initial);
  const start = (a: AcmeConfig, c: Config) => {
    if (a.challenge !== "dns-01" && !a.http_listen_addr && !c.http_redirect) {
      logger.warn(
        "ACME HTTP-01 needs a plain-HTTP listener: set tls.acme.http_listen_addr or http_redirect",
      );
    }
    return startAcme(a, { ...deps.acme, logger, onCertificate: deps.onCertificate });
  };
  // What the main listener serves now: a switch to ACME keeps serving it until ACME's first
  // certificate arrives, rather than taking HTTPS down while it orders.
  let served: { cert: string; key?: string } | null = null;
  /** The tls.sni certificates served now, by file name. */
  let servedSni = new Map<string, string>();
  const redirect = deps.observe(redirectHandler({
    acme: () => acme,
    status: () => redirectStatus,
    httpsPort: deps.httpsPort,
    routed: () => routed,
  }));
  // A CA follows a redirect to https (RFC 8555 §8.3; Let's Encrypt does, to port 443): one made
  // in front of Prox (a load balancer, a CDN) brings HTTP-01 to the HTTPS listener. Pending
  // tokens are answered there too, as Caddy does; other paths under the prefix go to the routes.
  // Always this handler (ACME or not): a listener kept across a switch to ACME keeps its handler.
  // (A substring test first: no URL parse per request on the hot path.)
  // Not async: every request takes this way, and the common one is `deps.serve`'s own promise,
  // without another promise and turn of its own.
  // An answered challenge is access-logged (and counted) as the plain-HTTP listener's are: it
  // never reaches the pipeline, which logs the rest.
  const answers = new WeakMap<Request, Response>();
  const loggedAnswer = deps.observe((req) => Promise.resolve(answers.get(req)!));
  const serveWithChallenges: Handler = (req, info) => {
    const a = acme;
    if (
      a && req.url.includes(CHALLENGE_PREFIX) && (req.method === "GET" || req.method === "HEAD")
    ) {
      return a.knownChallenge(req).then((answer) => {
        if (!answer) return deps.serve(req, info);
        answers.set(req, answer);
        return loggedAnswer(req, info);
      });
    }
    return deps.serve(req, info);
  };
  return {
    get acme() {
      return acme;
    },
    get onDemand() {
      return onDemand;
    },
    async follow(c) {
      const next = acmeOf(c);
      if (acme && next) await acme.configure(next);
      else if (next) acme = await start(next, c);
      else if (acme) {
        // Stops ordering for a config that does not want ACME (an order in flight ends alone).
        void acme.close();
        acme = null;
      }
      if (next?.on_demand && onDemand) onDemand.configure(next);
      else if (next?.on_demand) {
        onDemand = createOnDemand(next, {
          ...deps.acme,
          logger,
          metrics: deps.metrics,
        });
      } else if (onDemand) {
        void onDemand.close();
        onDemand = null;
      }
    },
    async plansFor(c) {
      return listenerPlans(c, {
        tls: acmeOf(c) ? acme?.current() ?? served : await readTlsFiles(c),
        sni: await readSniFiles(c),
        clientAuth: await readClientAuth(c),
        onDemand: acmeOf(c)?.on_demand ? demandHook : undefined,
        serve: serveWithChallenges,
        redirect,
        metrics: deps.metrics,
      });
    },
    applied(c, plans) {
      redirectStatus = c.http_redirect?.status_code ?? 308;
      routed = routedHosts(c);
      const { cert, key } = mainTls(plans);
      const changed = served !== null && cert !== undefined && served.cert !== cert;
      served = cert ? { cert, key } : null;
      const notAfter = cert ? certificateNotAfter(cert) : null;
      const name = c.tls?.cert_path ?? (acmeOf(c) ? `acme:${acmeOf(c)!.domains[0]}` : "main");
      const sni = (plans.find((p) => p.id === "main")?.sni ?? []).map((s, i) => ({
        name: c.tls?.sni?.[i]?.cert_path ?? `sni:${i}`,
        cert: s.cert,
        notAfterMs: certificateNotAfter(s.cert),
      }));
      deps.metrics.certificateExpiry(name, notAfter, sni);
      const until = (ms: number | null) =>
        ms === null ? "" : `: valid until ${new Date(ms).toISOString()}`;
      // The tls.sni certificates rotated on disk under the same file name are news too.
      const rotated = sni.filter((s) => servedSni.has(s.name) && servedSni.get(s.name) !== s.cert);
      servedSni = new Map(sni.map((s) => [s.name, s.cert]));
      const lines = [
        ...(changed ? [`${name}${until(notAfter)}`] : []),
        ...rotated.map((s) => `${s.name}${until(s.notAfterMs)}`),
      ];
      return lines.length ? `TLS certificate changed (${lines.join("; ")})` : null;
    },
    async close() {
      await Promise.all([acme?.close(), onDemand?.close()]);
    },
  };
}
