"""Every number framegate enforces or defaults to, in one place.

Layer 1: imports nothing from framegate. AWS-derived values cite the quota or
behaviour they copy (``docs/aws-behaviour.md#limits-and-close-codes`` and ``#quotas``).
Constructors take the one limit they need and default to the name here, so a
test or a Config can override any of them without touching this module.
"""

from typing import Final

# --- WebSocket wire (RFC 6455 + AWS caps) ---------------------------------
MAX_FRAME_BYTES: Final = 32 * 1024
"""AWS: WebSocket frame size 32 KB (not adjustable)."""
MAX_MESSAGE_BYTES: Final = 128 * 1024
"""AWS: message payload size 128 KB; longer messages close with 1009."""
MAX_CONTROL_PAYLOAD_BYTES: Final = 125
"""RFC 6455 5.5: control frames carry at most 125 payload bytes."""
MAX_CLOSE_REASON_BYTES: Final = MAX_CONTROL_PAYLOAD_BYTES - 2
"""A close body is a 2-byte code plus the reason."""
CODEC_RETAINED_BUFFER_BYTES: Final = 4096
"""A decoder frees its carry-over buffer once empty if it grew past this, so thousands of
idle connections do not each keep a high-water buffer."""
REASSEMBLY_RESERVE_FRAMES: Final = 4
"""A fragmented message reserves room for this many first-frame sizes (within the message cap):
a 128 KiB message in 32 KiB frames then reassembles without a resize."""
RELAY_OUT_SLACK_BYTES: Final = 64
"""``FrameDecoder.relay`` sizes its output at the input's length plus this (re-masked frames
are as long as the input's; unmasked input gains 4 bytes a frame), so it rarely grows."""
ENTROPY_POOL_BYTES: Final = 4096
"""Random bytes (mask keys, Sec-WebSocket-Keys, connection ids) are drawn from os.urandom this
many at a time (``proxy._entropy``): a syscall per frame or connection cost more than its work."""

# --- Handshake and connection lifetime ------------------------------------
MAX_REQUEST_HEAD_BYTES: Final = 16 * 1024
"""Upgrade request line + headers; beyond it the client gets 431."""
MAX_URL_CHARS: Final = 4096
"""AWS: URL length 4096 characters."""
HANDSHAKE_TIMEOUT_S: Final = 10.0
"""A client must finish its upgrade request within this, or is dropped."""
IDLE_TIMEOUT_S: Final = 10 * 60.0
"""AWS: idle connection timeout 10 minutes (no data frames either way)."""
MAX_CONNECTION_S: Final = 2 * 60 * 60.0
"""AWS: connection duration 2 hours."""
DRAIN_TIMEOUT_S: Final = 10.0
"""SIGTERM/SIGINT: how long closing connections may take before exit."""
CLOSE_TIMEOUT_S: Final = 5.0
"""How long to wait for the peer's close frame before dropping the socket."""

# --- File descriptors and the connection cap ---------------------------------
FD_RESERVE: Final = 64
"""Descriptors kept out of the connection cap for the process itself: listeners, the store and its
WAL, access-log files, the loop's own (epoll, signal pipe), imported modules' files."""
ADMIN_FD_RESERVE: Final = 64
"""Descriptors kept for admin-port connections (scrapes of /metrics, the control plane)."""
FDS_PER_CONNECTION: Final = 2
"""A client connection may need one upstream connection: the cap derived from the fd limit is
``(limit - FD_RESERVE - ADMIN_FD_RESERVE) // FDS_PER_CONNECTION``."""
MIN_CONNECTIONS: Final = 1
"""The derived cap never goes below this, however low the fd limit."""
REFUSAL_LINGER_S: Final = 1.0
"""A connection answered 503 over the cap is closed when the client closes, or after this: closing
at once, before its request arrived, would reset it and lose the 503 on the client's side."""
ACCEPT_ERROR_LOG_INTERVAL_S: Final = 1.0
"""Accept errors (and refusals over the cap) are logged at most once per interval, with a count."""

# --- TLS (proxy/server/tls.py) ----------------------------------------------
TLS_CONTEXT_CACHE: Final = 1024
"""Per-domain certificates held loaded (--tls-cert-dir); past it all are dropped and re-read on use."""
TLS_SHUTDOWN_TIMEOUT_S: Final = 5.0
"""How long a closing TLS connection waits for the peer's close_notify before the socket is closed."""

# --- Integrations ----------------------------------------------------------
INTEGRATION_TIMEOUT_MS: Final = 29_000
"""AWS default and maximum integration timeout for WebSocket APIs."""
MIN_INTEGRATION_TIMEOUT_MS: Final = 50
AUTHORIZER_TIMEOUT_S: Final = 10.0
"""A Lambda authorizer must answer within this, or the upgrade is refused with 500 (framegate's bound:
AWS documents no WebSocket authorizer timeout)."""
INTEGRATION_RESPONSE_MAX_BYTES: Final = MAX_MESSAGE_BYTES
"""An HTTP backend's answer is read up to this; more is a failed call (the reply could not be sent
as one message anyway)."""
LAMBDA_RESPONSE_MAX_BYTES: Final = 6 * 1024 * 1024
"""AWS Lambda: synchronous invocation response payload 6 MB; a longer answer is a failed call."""
INTEGRATION_POOL_CONNECTIONS: Final = 256
"""Keep-alive connections to HTTP backends and Lambda endpoints, all hosts together, per process."""
INTEGRATION_POOL_CONNECTIONS_PER_HOST: Final = 64
"""Of those, at most this many to one backend (host, port, scheme)."""
INTEGRATION_KEEPALIVE_S: Final = 15.0
"""An idle pooled integration connection is closed after this."""
INTEGRATIONS_IN_FLIGHT_PER_CONNECTION: Final = 16
"""HTTP/Lambda message integrations one client connection may have running at once; past it the
client is not read until one answers (back-pressure: nothing is dropped)."""
UPSTREAM_URL_CACHE: Final = 256
"""Parsed upstream URLs kept (one per distinct backend URL in use): parsed once, not per connection."""

# --- Back-pressure ---------------------------------------------------------
WRITE_HIGH_WATER_BYTES: Final = 256 * 1024
"""When a side's transport buffer passes this, stop reading the other side."""
WRITE_LOW_WATER_BYTES: Final = 64 * 1024
"""Resume reading once the buffer drains below this."""

# --- The @connections API on the data port (proxy/server/management.py) ------
MAX_PUSH_BYTES: Final = MAX_MESSAGE_BYTES
"""AWS: PostToConnection's Data is at most 128 KB; a longer request body is answered 413."""
MAX_PUSH_BUFFER_BYTES: Final = 1024 * 1024
"""A client over its write high-water mark (not reading) gets pushes only while its write buffer
stays within this; past it PostToConnection answers 429 rather than buffer without bound."""
MANAGEMENT_DISCARD_BYTES: Final = 4 * MAX_PUSH_BYTES
"""After a 413 the rest of an over-long body is read and dropped (so closing cannot reset the
answer away) up to this much; a longer one closes the connection."""
MANAGEMENT_IDLE_TIMEOUT_S: Final = 60.0
"""A keep-alive @connections caller may stay idle between requests this long."""

# --- Throttling (AWS account and stage defaults) ---------------------------
THROTTLING_BURST_LIMIT: Final = 5000
"""AWS stage DefaultRouteSettings.ThrottlingBurstLimit (= account burst)."""
THROTTLING_RATE_LIMIT: Final = 10000.0
"""AWS stage DefaultRouteSettings.ThrottlingRateLimit (= account rate)."""
ACCOUNT_BURST_LIMIT: Final = 5000
ACCOUNT_RATE_LIMIT: Final = 10000.0
NEW_CONNECTIONS_PER_S: Final = 500.0
"""AWS: new connections per second per account and region."""
THROTTLE_IDLE_RECLAIM_S: Final = 300.0
"""Token buckets untouched this long are dropped (they would be full anyway)."""
THROTTLE_TOKEN_EPSILON: Final = 1e-9
"""Token-count slack absorbing float error in clock readings (0.01 * k is not exact)."""

# --- Control-plane quotas ---------------------------------------------------
MAX_STAGES_PER_API: Final = 10
MAX_ROUTES_PER_API: Final = 300
MAX_INTEGRATIONS_PER_API: Final = 300
MAX_AUTHORIZERS_PER_API: Final = 10
"""AWS: Lambda authorizers per API 10."""
MAX_STAGE_VARIABLES: Final = 100
MAX_STAGE_VARIABLE_NAME_CHARS: Final = 64
MAX_STAGE_VARIABLE_VALUE_CHARS: Final = 512
MAX_API_MAPPING_KEY_CHARS: Final = 300
MAX_NAME_CHARS: Final = 128
"""Longest API name, route key or stage name the control plane accepts."""
MAX_DESCRIPTION_CHARS: Final = 1024
"""Longest API or stage description."""
MAX_API_VERSION_CHARS: Final = 64
MAX_INTEGRATION_URI_CHARS: Final = 2048
DEFAULT_PAGE_SIZE: Final = 25
MAX_PAGE_SIZE: Final = 500
MAX_ADMIN_BODY_BYTES: Final = 1024 * 1024
MAX_JSON_NESTING_DEPTH: Final = 32
"""Arrays and objects a control-plane request body may nest; the deepest real request
(a route response's ``responseParameters``) nests 3."""
MAX_JSON_NUMBER_CHARS: Final = 40
"""Characters in one JSON number of a request body (a double's longest repr is 24)."""
MAX_DOMAIN_NAME_CHARS: Final = 253
"""RFC 1035: a DNS name is at most 253 characters (63 per label)."""
MAX_DNS_LABEL_CHARS: Final = 63

# --- Admin listener -------------------------------------------------------------
ADMIN_KEEPALIVE_TIMEOUT_S: Final = 10.0
"""An admin connection without a complete request head for this long is closed: idle
between keep-alive requests, or sending its head slowly (one timer covers both, as the
data port's ``HANDSHAKE_TIMEOUT_S`` does for upgrades)."""
ADMIN_BODY_TIMEOUT_S: Final = 10.0
"""A request body must have arrived this long after its head, or the request fails."""
ADMIN_MAX_CONNECTIONS: Final = 128
"""Open admin connections served at once; a new one past this gets 503 and is closed."""
ADMIN_LINGER_S: Final = 1.0
"""After a refusal sent with the request unread (503 past the cap, 408, 413), the connection
discards what still arrives for at most this long (less at the client's EOF) before closing:
closing with unread data sends a reset, which can destroy the refusal before it is read."""
ADMIN_SHUTDOWN_TIMEOUT_S: Final = 1.0
"""At shutdown, in-flight admin requests get this long before their connections drop."""
SIGV4_MAX_CLOCK_SKEW_S: Final = 15 * 60.0
"""AWS: a signed request's X-Amz-Date may be at most 15 minutes from the server's clock."""
SIGV4_MAX_PRESIGN_EXPIRES_S: Final = 7 * 24 * 60 * 60
CLF_SECONDS_CACHED: Final = 4
"""Seconds whose Common Log Format text (``$context.requestTime``) is kept: the current one and a few late ones."""
SIGV4_SIGNING_KEYS_CACHED: Final = 16
"""Derived SigV4 signing keys a ``sigv4.Signer`` keeps (one per secret, date, region and service in use)."""
"""AWS: a presigned URL's X-Amz-Expires is at most 7 days."""

# --- Logging ----------------------------------------------------------------
DATA_TRACE_MAX_BYTES: Final = 1024
"""Payload excerpt length in data-trace log lines."""
ACCESS_LOG_FORMAT_MAX_BYTES: Final = 3 * 1024
"""AWS: access log template size 3 KB."""
ACCESS_LOG_FORMAT_CACHE: Final = 64
"""Compiled access-log formats kept (one per distinct stage format in use)."""
LOG_SINK_FLUSH_BYTES: Final = 64 * 1024
"""A log sink writes out once this much is buffered, without waiting for the loop."""
LOG_SINK_MAX_BUFFER_BYTES: Final = 4 * 1024 * 1024
"""Past this many unwritten bytes a log sink drops lines (and counts them) rather than grow."""
LOG_DIR_NAME: Final = "logs"
"""Access logs for ``arn:aws:logs:...`` destinations go to this directory next to the db."""

# --- Metrics ------------------------------------------------------------------
LATENCY_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 29.0)
"""Histogram buckets for integration and upstream-connect latency (29 s = integration timeout)."""

# --- Addresses and identity ---------------------------------------------------
DEFAULT_HOST: Final = "127.0.0.1"
DATA_PORT: Final = 8080
ADMIN_PORT: Final = 9090
ECHO_PORT: Final = 9001
MAX_PORT: Final = 65535
"""Largest TCP port number (0 asks the OS for a free one)."""
DEFAULT_REGION: Final = "us-east-1"
ACCOUNT_ID: Final = "123456789012"
"""Fixed fake account id used in ARNs and messages."""

# --- Route selection and templates (compiled once, cached) -------------------
SELECTION_EXPRESSION_CACHE: Final = 256
"""Compiled selection expressions kept (route, template and response selection)."""
ROUTE_TABLE_CACHE: Final = 64
"""Deployment snapshots whose compiled route tables are kept."""
RESOLVED_TARGET_CACHE: Final = 1024
"""(Host, path) pairs whose ``Target`` the catalog remembers until its next change (cleared when full)."""
TEMPLATE_CACHE: Final = 256
"""Compiled mapping templates kept."""
MIN_HTTP_STATUS: Final = 100
MAX_HTTP_STATUS: Final = 599
"""A MOCK request template's ``statusCode`` must be a real HTTP status."""
MOCK_DEFAULT_STATUS: Final = 200
"""A MOCK integration without a request template answers this (AWS: 200)."""
MAX_TEMPLATE_LOOP_ITERATIONS: Final = 10_000
"""``#foreach`` iterations one template render may run (all loops together)."""

# --- Cluster on Redis (docs/cluster.md) ----------------------------------------
REDIS_RECONNECT_MIN_S: Final = 0.05
"""First wait before reconnecting to Redis after it became unreachable; doubles per failure."""
REDIS_RECONNECT_MAX_S: Final = 2.0
"""Longest wait between reconnection attempts: a restarted Redis is found again within this."""
REDIS_STORE_RETRIES: Final = 3
"""A store command is retried this many times on a dropped connection (every change is idempotent)."""
NODE_HEARTBEAT_INTERVAL_S: Final = 1.0
"""A node renews its membership (and so its connections' lease) this often."""
NODE_TTL_S: Final = 3.0
"""A node not heard of for this long is dead: its connections are gone and it no longer counts."""
LEASE_REFILL_INTERVAL_S: Final = 0.01
"""How often a lease client tops up its pools below the low-water mark (off the message path)."""
LEASE_IDLE_REFILL_INTERVAL_S: Final = 0.05
"""The longest a lease client waits between two looks at its pools: when none is being spent fast
enough to be due sooner (each look wakes the event loop; an idle process looks 20 times a second)."""
LEASE_BATCH_OF_RATE_S: Final = 0.02
"""A pool is topped up to this many seconds of its bucket's rate (at least 1 token, at most the
burst): rate 10000/s gives 200 tokens, twice what one refill interval at the full rate uses."""
REDIS_COMMAND_TIMEOUT_S: Final = 0.5
"""A cluster command (lease, heartbeat, routing) waiting longer than this counts as Redis unreachable."""
LEASE_LOW_WATER_FRACTION: Final = 0.5
"""A pool is topped up when it holds less than this fraction of its batch."""
LEASE_LOOK_INTERVAL_S: Final = 0.25
"""A bucket's credit (its share of what the shared bucket held) is at most this old: a process with
nothing else to ask Redis looks again this often (docs/cluster.md#leases)."""
STORE_POLL_INTERVAL_S: Final = 0.25
"""How often a process on a SQLite store reads ``PRAGMA data_version`` to see other workers' changes
(one cheap read off the loop; a change is served everywhere within this plus one reload)."""
ROUTE_REPLY_TIMEOUT_S: Final = 5.0
"""How long a node waits for the owner of a connection to answer a routed @connections call."""
MAX_ENVELOPE_BYTES: Final = 4 * (MAX_MESSAGE_BYTES // 3 + 1) + 1024
"""A routed @connections call or reply between nodes: a base64 message at the cap plus its fields."""
MAX_ENVELOPE_HEADERS: Final = 16
"""Headers a routed reply may carry (the owner sends three or four: request id, type, error type)."""
REGISTRY_BATCH_MAX: Final = 512
"""Connections one registry write registers or unregisters at most (a Lua loop: Redis runs it alone,
so a bound keeps each call short); a burst of connects is written in several such calls."""

# --- Worker processes (framegate serve --workers N) -----------------------------
WORKER_START_TIMEOUT_S: Final = 60.0
"""How long a worker may take to print its ready line before the supervisor gives up on it."""
WORKER_RESTART_DELAY_S: Final = 0.1
"""Wait before restarting a crashed worker; doubles while it keeps crashing soon after start."""
WORKER_RESTART_MAX_DELAY_S: Final = 5.0
METRICS_SCRAPE_TIMEOUT_S: Final = 2.0
"""Worker 0 waits this long for another worker's /metrics before leaving it out of the sum."""
WORKER_MIN_UPTIME_S: Final = 5.0
"""A worker that ran at least this long before crashing is restarted after the first delay again."""

# --- Load generator (framegate bench) and echo backend ------------------------
BENCH_DEFAULT_DURATION_S: Final = 10.0
"""Measured load when neither --duration nor --messages is given."""
BENCH_MAX_DURATION_S: Final = 15 * 60.0
"""Hard ceiling on any bench run, --messages included: every load is bounded."""
BENCH_PROGRESS_INTERVAL_S: Final = 0.5
"""Live progress refresh on a terminal; also how often workers publish counters."""
BENCH_SEQUENCE_DIGITS: Final = 4
"""Each bench message starts with its per-connection number in this many hex digits (fewer if the
message is shorter), so every reply is checked against the one message it must echo. Numbers wrap
at 16**4: every number is looked up in a table built once (a few MB) instead of formatted per
message, and 65536 outstanding messages per connection is beyond any window."""
BENCH_HISTOGRAM_SUB_BUCKET_BITS: Final = 10
"""Log-linear histogram: 2**10 linear sub-buckets per power of two, < 0.1 % value error."""
BENCH_HISTOGRAM_MAX_NS: Final = 60 * 60 * 10**9
"""Largest recordable latency (1 hour); larger values are clamped into the top bucket."""
BENCH_REFUSAL_BODY_BYTES: Final = 512
"""Of a refused upgrade's response body, what bench keeps to print (the rest is not read)."""
BENCH_OUT_INTERVAL_S: Final = 1.0
"""--out writes one row per this many seconds of the measured window."""
BENCH_REFUSAL_SHARE_LIMIT: Final = 0.01
"""Above this share of replies being gateway refusals, a run fails (unless --allow-errors): it measured
the gateway's throttle or authorizer, not the load it claims."""
BENCH_INBOX_MESSAGES: Final = 10_000
"""Scenario replies one connection buffers before an ``expect`` takes them; older ones are dropped and counted."""
BENCH_STAGE_TICK_S: Final = 0.1
"""How often ramping stages adjust the number of open connections."""
BENCH_EXIT_FAILED: Final = 1
"""Exit code: nothing was measured, or the endpoint could not be used at all."""
BENCH_EXIT_USAGE: Final = 2
"""Exit code: unusable flags, scenario or output paths (before any traffic)."""
BENCH_EXIT_REFUSALS: Final = 98
"""Exit code: more than BENCH_REFUSAL_SHARE_LIMIT of replies were gateway refusals (no --allow-errors)."""
BENCH_EXIT_THRESHOLDS: Final = 99
"""Exit code: a --threshold was breached (k6 uses the same number)."""
BENCH_EXIT_INTERRUPTED: Final = 130
"""Exit code: stopped by SIGINT (Ctrl-C) after printing the summary so far (128 + SIGINT)."""
EXIT_BROKEN_PIPE: Final = 141
"""Exit code of any command whose stdout reader went away (``| head``): 128 + SIGPIPE, as the shell reports."""

# --- Units -------------------------------------------------------------------
MS_PER_S: Final = 1000
"""AWS gives times and timeouts in milliseconds (``connectedAt``, ``timeoutInMillis``); our clocks tick in s."""

REDIS_SEED_CLAIM_S: Final = 10.0
"""How long the node that claimed seeding an empty Redis store holds the claim: nodes starting together
on a bare store seed the demo API once, and after a crash before the write another node may seed."""
