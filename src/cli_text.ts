// The CLI's texts: version, help per command, and the embedded welcome config and page.

/** The version printed by `prox --version`. */
export const VERSION = "0.1.0";

export const HELP = `prox ${VERSION}: a reverse proxy for HTTP/1.1, HTTP/2, HTTP/3 and WebSocket

Usage:
  prox [serve] [-c FILE] [--workers N] [--pid-file F [--takeover]] [--no-watch]
                                         serve with FILE (default: config.yaml)
  prox validate [-c FILE] [--format text|json]
                                         check a config and explain every problem
  prox explain [-c FILE] [METHOD] URL [-H 'Name: value']... [--client-ip IP] [--format text|json]
                                         show where a request would go, sending nothing
  prox test [-c FILE] TESTS              check routing against a file of expected outcomes
  prox replay [-c FILE] [--against CURRENT] [--fail-on-change] [--json] LOG...
                                         which logged requests FILE would route elsewhere
  prox top [-c FILE | --admin URL] [--token T] [--interval 1s] [--once] [--format text|json]
                                         live view of a running Prox from its admin listener
  prox proxy --to URL... [--from ADDR] [--preserve-host] [--print-config]
                                         proxy ADDR (default 127.0.0.1:8080) to URL, no config
  prox static [DIR] [--from ADDR] [--spa | --browse] [--print-config]
                                         serve the files of DIR (default .), no config
  prox schema                            print the config's JSON Schema (for editors)
  prox hash-password                     read a password, print its bcrypt hash (basic_auth)
  prox help [COMMAND]                    show help
  prox --version

Options:
  -c, --config FILE    config file (default: config.yaml; with no such file, serve runs an
                       embedded welcome config on 127.0.0.1:3000); - reads it from stdin, once
      --format FMT     validate, explain, replay and top output: text (default) or json
  -H, --header H       explain: a request header 'Name: value' (repeatable)
      --client-ip IP   explain: the client's address (default 192.0.2.1)
      --against FILE   replay: compare with FILE's decisions instead of the logged ones
      --fail-on-change replay: exit 1 when any request would change (for CI)
      --json           the same as --format json
      --samples K      replay: sample requests per change group (default 3)
      --admin URL      top: the admin listener (default: -c FILE's admin, else 127.0.0.1:9090)
      --token T        top: the admin token (or env PROX_ADMIN_TOKEN, or -c FILE's admin.token)
      --interval D     top: time between polls (default 1s)
      --once           top: print one snapshot (two polls one interval apart) and exit
      --log-level LVL  debug | info | warn | error (or env PROX_LOG_LEVEL)
      --pid-file F     serve: write the process id to F (removed on exit)
      --takeover       serve: once listening, tell the Prox named in --pid-file to drain and
                       exit (zero-downtime upgrade; both share the port with SO_REUSEPORT)
      --no-watch       serve: do not reload when the config or TLS files change
      --workers N      serve: N worker processes sharing the port (overrides workers:)
      --from ADDR      proxy, static: listen address (8080: 127.0.0.1:8080, :8080: all)
      --to URL         proxy: a target (3000, host:port, a URL or unix:/path; repeatable)
      --spa            static: serve index.html for paths no file has (single-page apps)
      --browse         static: list a directory that has no index.html
      --preserve-host  proxy: send the client's Host upstream
      --print-config   proxy, static: print the config they run, and exit
  -h, --help           show help
  -V, --version        show the version

Exit codes: 0 valid / clean shutdown, 1 invalid config or startup failure, 2 usage error.`;

export const COMMAND_HELP: Record<string, string> = {
  serve: `Usage: prox serve [-c FILE] [--workers N] [--pid-file FILE [--takeover]] [--no-watch]

Serves traffic as configured in FILE (default config.yaml).

Reload:   saving FILE (or the TLS certificate/key it names) reloads it; so does SIGHUP. A
          config with errors is rejected with its located issues and the running one stays.
Shutdown: SIGTERM or SIGINT stops accepting, lets in-flight requests finish for up to
          shutdown_timeout (default 30s), then exits 0. A second signal forces exit (code 1).
Upgrade:  start the new binary with --takeover --pid-file F: it binds the same port
          (SO_REUSEPORT), and once it is listening it sends SIGUSR2 to the process in F,
          which drains and exits. SIGUSR2 sent by hand does the same (SIGUSR1,
          the Rust Prox's "restart", drains and exits too).
Workers:  with workers: N > 1 (or --workers N) this process supervises N worker processes
          sharing the port; signals go to it and it forwards them. Worker 0 alone runs the
          admin listener and HTTP/3. A worker that dies is restarted.

Options:
  --pid-file FILE   write the process id to FILE; removed on exit if still ours
  --takeover        replace the Prox whose id is in --pid-file once this one is listening
  --no-watch        do not watch the config and TLS files
  --workers N       worker processes (1-64; overrides the config's workers)`,
  validate: `Usage: prox validate [-c FILE] [--format text|json]

Checks FILE (default config.yaml) and prints every problem with file:line:col, the key path,
what is wrong and how to fix it. Exit 0 when valid, 1 when not.`,
  explain: `Usage: prox explain [-c FILE] [METHOD] URL [-H 'Name: value']... [--client-ip IP]
                    [--format text|json]

Shows what Prox would do with one request under FILE (default config.yaml), sending nothing
upstream: which route matches and why each other route lost; the upstream URL after path_rewrite
(query kept), the targets and the one a first attempt would pick (health is not known offline:
every target counts as up); the redirect Location or the static file; the request headers the
upstream would get, as a diff; response header rules; rate limits and the key of the request.
METHOD defaults to GET; a URL given as a path (/api) means http://localhost/api. The client
address defaults to 192.0.2.1 (matters for trusted_proxies, rate-limit keys and hashing).
Exit 0 explained, 1 invalid config, 2 usage error.

Example:
  prox explain POST https://api.example.com/v1/users -H 'Cookie: lb=a' --client-ip 10.0.0.7`,
  test: `Usage: prox test [-c FILE] TESTS

Runs table-driven routing tests (for CI): each case in TESTS, a YAML list, is a request and what
Prox should do with it under FILE (default config.yaml). Each is explained as prox explain does,
sending nothing; only the expected keys given are checked. Exit 0 when all pass, 1 when one fails
or a file is invalid, 2 usage error.

  - name: API calls go to the API, query kept     # optional
    request: GET https://api.example.com/v1/users?page=2
    headers: { Cookie: "session=abc" }            # optional; client_ip: 10.0.0.7 too
    expect:
      route: api.example.com/v1                   # null: no route matches
      action: proxy  # proxy | load_balance | static | redirect | respond | websocket | error
      upstream: http://10.0.0.2:8080/users?page=2 # the URL the request line goes to
      target: http://10.0.0.2:8080                # the target a first attempt picks
      headers: { X-Forwarded-Proto: https, Cookie: null }   # null: not sent upstream
  - request: /old/page
    expect: { status: 308, location: /page }      # file: for static routes`,
  replay: `Usage: prox replay [-c FILE] [--against CURRENT] [--fail-on-change] [--json]
                   [--samples K] LOG...

Replays Prox's JSON access log lines (log.access_log: json) through FILE (default config.yaml), a
candidate config, sending nothing: each request is decided as prox explain does (route, upstream
URL after path_rewrite, redirect Location, static file, or Prox's own answer such as 403 or 404).
Without --against, a request has changed when its route differs from the logged one, the logged
target is not among the route's targets, or Prox would now answer itself where an upstream did
(or the reverse). With --against CURRENT, both configs decide every request and any difference
counts. Prints the counts, the changes grouped "from -> to" with K sample requests each (default
3), the requests that now get 404, the routes whose decision depends on what the log does not
hold (credentials, the auth service, Upgrade), and what is assumed: every target up, no rate
limit reached, no query string. LOG may be a file, a .gz file or - (standard input); lines that
are not access records are skipped and counted.
Exit 0 replayed, 1 a config or log cannot be read, a log holds no JSON access record, or (with
--fail-on-change) a request changed; 2 usage error.

Example:
  prox replay -c candidate.yaml --against config.yaml --fail-on-change access.log.1.gz access.log`,
  "hash-password": `Usage: prox hash-password

Reads a password (typed without echo, or one line on standard input) and prints its bcrypt hash
(cost 10) for basic_auth:
  $ prox hash-password
  Password:
  $2b$10$…
  routes: { "/admin": { …, basic_auth: { users: { alice: "$2b$10$…" } } } }
Or from a script: printf '%s\\n' "$PASSWORD" | prox hash-password`,
  top: `Usage: prox top [-c FILE | --admin URL] [--token T] [--interval 1s] [--once]
                [--format text|json]

A live view of a running Prox, polled from its admin listener (/metrics and /status) every
interval: uptime, config version and last reload, requests in progress by protocol, requests/s
in all and per route (busiest first) with status classes, p50/p95 and rate-limited requests,
cache hit ratio, upstream targets (health, requests/s, in flight, latency), certificate expiry.
Rates are counter increases between two polls; p50/p95 are estimates interpolated from the
latency histogram's buckets. --once polls twice, one interval apart, prints and exits;
--format json prints the computed snapshot (one object per interval).

Admin URL: --admin, else admin.listen_addr of -c FILE, else http://127.0.0.1:9090.
Token:     --token, else env PROX_ADMIN_TOKEN, else admin.token of -c FILE.
Exit 0 done (--once; Ctrl-C ends the live view), 1 the admin listener cannot be reached, refuses
the token or is not Prox's at the first poll (later, a failed poll is shown and polling goes on),
2 usage error.

Example:
  PROX_ADMIN_TOKEN=s3cret prox top --admin 10.0.0.5:9090 --interval 2s`,
  proxy: `Usage: prox proxy --to URL... [--from ADDR] [--preserve-host] [--print-config]

Proxies every request on ADDR (default 127.0.0.1:8080; 8080 is 127.0.0.1:8080, :8080 every
interface) to URL, with no config file: 3000 or :3000 is http://127.0.0.1:3000, host:port gets
http://, a URL or unix:/path/app.sock is used as written. Several --to share the load (round
robin; one that fails requests is left out for a while). --print-config prints the config it
runs (to start a config.yaml from) and exits. SIGTERM/Ctrl-C drains and stops.

Examples:
  prox proxy --to 3000
  prox proxy --from :443 --to http://10.0.0.5:8080 --to http://10.0.0.6:8080 --print-config`,
  static: `Usage: prox static [DIR] [--from ADDR] [--spa | --browse] [--print-config]

Serves the files of DIR (default: the working directory) on ADDR (default 127.0.0.1:8080), with
no config file: index.html for directories, compression, Range, ETag and Last-Modified, no
dotfiles, nothing outside DIR. --spa answers paths without a file with index.html (single-page
apps); --browse lists a directory that has no index.html. --print-config prints the config it
runs and exits.

Example:
  prox static ./dist --from 5000 --spa`,
  schema: `Usage: prox schema

Prints a JSON Schema of the config. Point the YAML language server at it for completion:
  # yaml-language-server: $schema=./prox.schema.json`,
};

export const WELCOME_CONFIG = (root: string) =>
  `listen_addr: "127.0.0.1:3000"
health_check:
  enabled: false
routes:
  "/":
    type: static
    root: ${JSON.stringify(root)}
`;

export const WELCOME_HTML =
  `<!doctype html><html><head><meta charset="utf-8"><title>Prox</title></head>
<body><h1>Prox is running</h1><p>No config.yaml was found, so Prox serves this page from its
embedded default config. Write a config.yaml and run <code>prox validate</code>, then
<code>prox serve</code>; or, with no config at all, <code>prox proxy --to 3000</code> puts Prox in
front of your app on port 3000 and <code>prox static ./dist</code> serves a directory.</p></body></html>
`;
