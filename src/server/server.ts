/**
 * The HTTP server: Node's `http` (docs/server.md says why), routing, authentication, body limits,
 * timeouts, admission and draining. Handlers read the request, call the key store and a
 * TextGenerator, and write OpenAI-shaped answers; everything that can go wrong on the wire ends
 * in an ApiError answer, never a crash of the server.
 */
import { randomBytes } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Admission } from './admission.js';
import { ApiError, invalidRequest } from './api-error.js';
import { type Caps, type Kind, type ServedModel, prepare, respond, streamError } from './completions.js';
import type { KeyRecord, KeyStore } from './keys.js';
import { type KvCacheGauges, Metrics } from './metrics.js';
import { parseChatRequest, parseCompletionRequest } from './requests.js';

export const DEFAULT_MAX_BODY = 1 << 20;

export interface ServerOptions extends Caps {
  models: readonly ServedModel[];
  /** null: no authentication (only with --insecure-no-auth on a loopback host). */
  keys: KeyStore | null;
  maxConcurrency: number;
  maxQueue: number;
  maxBody: number;
  /** Most time a request may take, queueing and generation included. */
  deadlineMs: number;
  /** Most time to receive the headers, and the whole request (slow clients are cut off). */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** The batching engine's KV cache blocks, for /metrics (absent without the engine). */
  kvBlocks?: () => KvCacheGauges;
  /** One structured log entry per request (and per server event). */
  log: (entry: Record<string, unknown>) => void;
}

export const SERVER_DEFAULTS = {
  maxConcurrency: 2,
  maxQueue: 16,
  maxTokens: 1024,
  maxBody: DEFAULT_MAX_BODY,
  maxN: 1,
  maxChoices: 16,
  deadlineMs: 120_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
} as const;

/** Query parameters that carry keys in other APIs: a key there ends up in proxy and access logs. */
const KEY_QUERY = /(^|_|-)(key|token|auth|authorization)$/i;

export interface ApiServer {
  server: Server;
  listen(port: number, host: string): Promise<string>;
  /** Stops accepting, lets in-flight requests finish, then closes. */
  drain(): Promise<void>;
}

interface Exchange {
  id: string;
  route: string;
  key: KeyRecord | null;
  model?: string;
  promptTokens?: number;
  completionTokens?: number;
  cancelled?: boolean;
}

export function createApiServer(opts: ServerOptions): ApiServer {
  const admission = new Admission(opts.maxConcurrency, opts.maxQueue);
  const metrics = new Metrics();
  let draining = false;
  let inFlight = 0;
  let idle: (() => void) | null = null;

  const server = createServer(
    {
      headersTimeout: opts.headersTimeoutMs,
      requestTimeout: opts.requestTimeoutMs,
      // How often Node checks the two timeouts above (its default, 30 s, would let slow clients linger).
      connectionsCheckingInterval: Math.min(1000, opts.headersTimeoutMs),
      keepAliveTimeout: 5000,
      maxHeaderSize: 16 * 1024,
    },
    (req, res) => {
      inFlight++;
      const started = performance.now();
      const ex: Exchange = { id: randomBytes(8).toString('hex'), route: 'other', key: null };
      res.on('close', () => {
        const seconds = (performance.now() - started) / 1000;
        metrics.countRequest(ex.route, res.statusCode, seconds);
        opts.log({
          event: 'request',
          id: ex.id,
          method: req.method,
          route: ex.route,
          status: res.statusCode,
          key: ex.key?.name ?? null,
          model: ex.model ?? null,
          prompt_tokens: ex.promptTokens ?? null,
          completion_tokens: ex.completionTokens ?? null,
          client_closed: !res.writableFinished,
          ms: Math.round(seconds * 1000),
        });
        if (--inFlight === 0 && idle) idle();
      });
      handle(req, res, ex).catch((err: unknown) => {
        const api = err instanceof ApiError ? err : null;
        if (!api) opts.log({ event: 'internal_error', id: ex.id, message: (err as Error).message });
        const answer =
          api ??
          new ApiError(
            500,
            'server_error',
            'internal_error',
            `internal error (request ${ex.id}); the server keeps running`,
          );
        if (res.headersSent) streamError(res, answer);
        else if (!res.destroyed) send(res, answer.status, answer.body(), answer.headers);
      });
    },
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed requests, headers too large, timeouts: Node gives us the socket to answer on.
    if (!socket.writable) return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    socket.end(
      `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`,
    );
  });

  async function handle(req: IncomingMessage, res: ServerResponse, ex: Exchange): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    for (const [name, value] of url.searchParams)
      if (KEY_QUERY.test(name) || value.startsWith('knobs_'))
        throw invalidRequest(
          'key_in_url',
          'keys go in the Authorization header (Bearer), never in the URL: URLs end up in logs; revoke a key that was sent this way',
          null,
        );
    if (draining) {
      res.setHeader('connection', 'close');
      throw new ApiError(
        503,
        'server_error',
        'shutting_down',
        'the server is shutting down; retry on another replica or later',
        null,
        { 'retry-after': '5' },
      );
    }
    const path = url.pathname;
    if (path === '/healthz') {
      ex.route = 'healthz';
      return send(res, 200, { status: 'ok' });
    }
    const route = routeOf(req.method ?? 'GET', path);
    ex.route = route.name;
    ex.key = await authenticate(req);
    if (route.name === 'metrics') {
      if (opts.keys && !ex.key?.admin)
        throw new ApiError(
          403,
          'permission_error',
          'admin_required',
          '/metrics needs an admin key (knobs keys create --admin)',
        );
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      return void res.end(
        metrics.render({ active: admission.active, queued: admission.queued, kvBlocks: opts.kvBlocks?.() }),
      );
    }
    if (route.name === 'models')
      return send(res, 200, { object: 'list', data: visibleModels(ex.key).map(modelObject) });
    if (route.name === 'model') return send(res, 200, modelObject(findModel(route.model!, ex.key)));
    const body = await readJson(req);
    await complete(route.name as Kind, body, res, ex);
  }

  async function complete(kind: Kind, body: unknown, res: ServerResponse, ex: Exchange): Promise<void> {
    const parsed = kind === 'chat' ? parseChatRequest(body) : parseCompletionRequest(body);
    const model = findModel(parsed.model, ex.key);
    ex.model = model.id;
    const prepared = prepare(kind, parsed, model, opts);
    const controller = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished)
        controller.abort(new ApiError(499, 'server_error', 'client_closed', 'the client closed the connection'));
    };
    res.on('close', onClose);
    const deadline = setTimeout(
      () =>
        controller.abort(
          new ApiError(
            504,
            'server_error',
            'deadline_exceeded',
            `the request took longer than this server's deadline of ${opts.deadlineMs} ms; ask for fewer tokens`,
          ),
        ),
      opts.deadlineMs,
    );
    let reservation = null;
    let release: (() => void) | null = null;
    try {
      if (opts.keys && ex.key) {
        const admit = await opts.keys.admit(ex.key, prepared.reserve, Date.now());
        if (!admit.ok)
          throw new ApiError(
            429,
            'rate_limit_error',
            admit.limit === 'rpm' ? 'rate_limit_exceeded' : 'tokens_per_day_exceeded',
            `this key's limit of ${admit.detail}; retry after ${admit.retryAfterSeconds} s`,
            null,
            { 'retry-after': String(admit.retryAfterSeconds) },
          );
        reservation = admit.reservation;
      }
      release = await admission.acquire(controller.signal);
      const outcome = await respond(prepared, res, controller.signal);
      ex.promptTokens = outcome.promptTokens;
      ex.completionTokens = outcome.completionTokens;
      metrics.promptTokens += outcome.promptTokens;
      metrics.completionTokens += outcome.completionTokens;
      if (outcome.cancelled) {
        metrics.cancelled++;
        throw controller.signal.reason;
      }
    } finally {
      clearTimeout(deadline);
      res.off('close', onClose);
      release?.();
      if (reservation && opts.keys)
        await opts.keys.settle(
          reservation,
          { model: model.id, promptTokens: ex.promptTokens ?? 0, completionTokens: ex.completionTokens ?? 0 },
          Date.now(),
        );
    }
  }

  async function authenticate(req: IncomingMessage): Promise<KeyRecord | null> {
    if (!opts.keys) return null;
    const header = req.headers.authorization;
    const challenge = { 'www-authenticate': 'Bearer' };
    if (!header)
      throw new ApiError(
        401,
        'authentication_error',
        'missing_api_key',
        'this server needs an API key: send Authorization: Bearer KEY',
        null,
        challenge,
      );
    const m = /^Bearer ([^\s]+)$/i.exec(header);
    const key = m ? await opts.keys.authenticate(m[1]!) : null;
    if (!key)
      throw new ApiError(
        401,
        'authentication_error',
        'invalid_api_key',
        'the API key is not valid (unknown, malformed or revoked); ask the server operator for a key',
        null,
        challenge,
      );
    return key;
  }

  function visibleModels(key: KeyRecord | null): readonly ServedModel[] {
    return key?.models ? opts.models.filter((m) => key.models!.includes(m.id)) : opts.models;
  }

  function findModel(id: string, key: KeyRecord | null): ServedModel {
    const model = visibleModels(key).find((m) => m.id === id);
    // A model the key may not use is reported as absent: a key learns nothing about other models.
    if (!model)
      throw new ApiError(
        404,
        'not_found_error',
        'model_not_found',
        `the model '${id.slice(0, 256)}' does not exist or this key cannot use it; GET /v1/models lists yours`,
        'model',
      );
    return model;
  }

  async function readJson(req: IncomingMessage): Promise<unknown> {
    const length = Number(req.headers['content-length'] ?? NaN);
    if (length > opts.maxBody) throw bodyTooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > opts.maxBody) throw bodyTooLarge();
      chunks.push(chunk);
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
    } catch {
      throw invalidRequest('invalid_utf8', 'the request body is not valid UTF-8');
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw invalidRequest('invalid_json', `the request body is not JSON: ${(err as Error).message.slice(0, 200)}`);
    }
  }

  function bodyTooLarge(): ApiError {
    return new ApiError(
      413,
      'invalid_request_error',
      'body_too_large',
      `the request body is over this server's limit of ${opts.maxBody} bytes`,
      null,
      { connection: 'close' },
    );
  }

  return {
    server,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const a = server.address() as AddressInfo;
          resolve(`http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
        });
      });
    },
    async drain() {
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inFlight > 0) await new Promise<void>((resolve) => (idle = resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}

function routeOf(method: string, path: string): { name: string; model?: string } {
  const routes: [string, string, RegExp][] = [
    ['GET', 'models', /^\/v1\/models$/],
    ['GET', 'model', /^\/v1\/models\/(.+)$/],
    ['POST', 'completion', /^\/v1\/completions$/],
    ['POST', 'chat', /^\/v1\/chat\/completions$/],
    ['GET', 'metrics', /^\/metrics$/],
  ];
  for (const [m, name, re] of routes) {
    const match = re.exec(path);
    if (!match) continue;
    if (m !== method)
      throw new ApiError(
        405,
        'invalid_request_error',
        'method_not_allowed',
        `${path} takes ${m}, not ${method.slice(0, 16)}`,
      );
    let model: string | undefined;
    try {
      model = match[1] === undefined ? undefined : decodeURIComponent(match[1]);
    } catch {
      throw invalidRequest('invalid_value', 'the model id in the path is not valid percent-encoding', 'model');
    }
    return { name, model };
  }
  throw new ApiError(
    404,
    'not_found_error',
    'not_found',
    `no route ${method.slice(0, 16)} ${path.slice(0, 256)}; see docs/server.md`,
  );
}

/**
 * OpenAI's model object plus vLLM's fields: `parent` names the base of an adapter (null for a base),
 * `root` the base the weights come from (vLLM puts a file path there; a closed server does not),
 * `max_model_len` the context.
 */
const modelObject = (m: ServedModel) => ({
  id: m.id,
  object: 'model',
  created: m.created,
  owned_by: 'knobs',
  root: m.parent ?? m.id,
  parent: m.parent ?? null,
  max_model_len: m.generator.contextLength,
});

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}
