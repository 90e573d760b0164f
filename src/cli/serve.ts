/** `knobs serve MODEL`: an authenticated OpenAI-compatible HTTP API for one language model (docs/server.md). */
import { basename, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { openLanguageModel } from '../load/language-model.js';
import { chatTemplateOf } from '../server/chat-template.js';
import { parseAdapterSpec, servedModels } from '../server/served-models.js';
import { SERVER_DEFAULTS, createApiServer } from '../server/server.js';
import { SqliteKeyStore } from '../server/sqlite-keys.js';
import { type Command, parse } from './command.js';
import { positiveInt } from './flags.js';
import { readMasterKey } from '../seal/keys.js';
import { BatchGenerator } from '../serve/batch-generator.js';
import { type BatchEngine, KV_RESERVES, type KvReserve } from '../serve/engine.js';
import { DEFAULT_KV_CACHE_MB, openBatchEngine } from '../serve/open.js';
import { KV_BLOCK, KV_CACHE_DTYPES, type KvCacheDtype } from '../serve/paged-kv.js';

/** Generations at once with batching: the most rows of one decode step. */
const BATCHED_CONCURRENCY = 64;

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export const serveCommand: Command = {
  name: 'serve',
  summary: 'serve a language model over an authenticated OpenAI-compatible HTTP API',
  help: `Usage: knobs serve MODEL [--name ID] [--host HOST] [--port N] [--keys FILE | --insecure-no-auth]
                   [--max-concurrency N] [--queue N] [--max-tokens N] [--max-body BYTES] [--max-n N]
                   [--max-choices N] [--deadline-ms MS] [--master-key-file F] [--public-key KEY.pub]
                   [--adapter NAME=DIR]... [--allow-base-mismatch] [--kv-cache-mb N]
                   [--kv-cache-dtype f32|f16] [--kv-reserve expected|whole] [--no-prefix-cache]
                   [--no-batching]

Serves MODEL (a run directory, a Hugging Face model directory or a GGUF file, plain, sealed or
signed, as 'knobs generate' opens it) at
/v1/models, /v1/completions and /v1/chat/completions, OpenAI's API (docs/server.md). When ready it
prints {"url": ...} on stdout; logs are JSON lines on stderr. SIGTERM (or Ctrl-C) stops accepting
requests, lets those in flight finish, and exits 0 (130 after Ctrl-C).

  --name ID            the model id clients send (default: MODEL's directory name)
  --host HOST          address to listen on (default 127.0.0.1)
  --port N             port (default 8080; 0 picks a free one)
  --keys FILE          the key file 'knobs keys create' makes; every request needs one of its keys
  --insecure-no-auth   serve without keys (only on a loopback host)
  --max-concurrency N  generations at once (default ${BATCHED_CONCURRENCY} with batching, else ${SERVER_DEFAULTS.maxConcurrency})
  --queue N            requests that may wait for a slot (default ${SERVER_DEFAULTS.maxQueue}); beyond: 503 at once
  --max-tokens N       most max_tokens one request may ask for (default ${SERVER_DEFAULTS.maxTokens}); over it: 400
  --max-body BYTES     request body limit (default ${SERVER_DEFAULTS.maxBody}); over it: 413
  --max-n N            most choices per prompt, OpenAI's n (default ${SERVER_DEFAULTS.maxN})
  --max-choices N      most choices per request: prompts × n, for /v1/completions with several
                       prompts (default ${SERVER_DEFAULTS.maxChoices} or --max-n if larger); they run one after another in the request's slot
  --deadline-ms MS     most time one request may take, queueing included (default ${SERVER_DEFAULTS.deadlineMs})
  --master-key-file F  the master key of a sealed MODEL (else KNOBS_MASTER_KEY): decrypted into
                       memory only (docs/sealing.md)
  --public-key KEY     MODEL is a bundle signed by 'knobs release': refused unless every file
                       verifies as it is read (docs/release.md)
  --adapter NAME=DIR   also serve the LoRA adapter DIR (a PEFT directory, e.g. made by 'knobs tune')
                       on MODEL as model id NAME; repeatable. Each adapter is its own model id
                       (keys' --models apply per id), chosen per request, sharing MODEL's weights
                       (adapters that train whole norms, heads or biases too: modules_to_save, bias)
  --allow-base-mismatch  serve an adapter that records another base's weight digest (the shapes
                       must still fit); without it such an adapter refuses to start
  --kv-cache-mb N      KV cache budget of continuous batching, in MiB (default ${DEFAULT_KV_CACHE_MB}); a
                       request waits until its prompt fits with room for what the running requests
                       are expected to grow by (--kv-reserve); one that never fits is refused (400)
  --kv-cache-dtype T   what the cache stores: f32 (default) or f16, which fits twice the positions
                       in the budget and halves what attention reads a step; keys and values are
                       rounded to f16 as they are stored (llama.cpp's default cache type), so tokens
                       can differ from an f32 cache's
  --kv-reserve R       what a request's admission leaves room for: expected (default: each running
                       request's remaining tokens times the share of max_tokens recent answers used;
                       a request that outgrows it may be preempted and computed again later, to the
                       same tokens) or whole (all of every request's max_tokens: never preempted,
                       fewer at once)
  --no-prefix-cache    compute every prompt in full; by default the whole 16-token blocks a prompt
                       shares from its start with an earlier one (a system prompt, a conversation
                       so far) are read from the cache instead (the same tokens either way)
  --no-batching        decode one sequence per step instead of batching the running requests
                       (batching needs a Llama-family or GPT-2 model and the native backend; without them
                       the server says why on stderr and runs unbatched) (docs/batching.md)

Example:
  knobs keys create --keys keys.db --name alice --rpm 60 --tokens-per-day 100000
  knobs serve models/TinyLlama-1.1B --keys keys.db --port 8080
  knobs serve runs/tiny --name tiny --adapter tiny-poems=runs/tiny-lora --keys keys.db`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        name: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        keys: { type: 'string' },
        'insecure-no-auth': { type: 'boolean' },
        'max-concurrency': { type: 'string' },
        queue: { type: 'string' },
        'max-tokens': { type: 'string' },
        'max-body': { type: 'string' },
        'max-n': { type: 'string' },
        'max-choices': { type: 'string' },
        'deadline-ms': { type: 'string' },
        'master-key-file': { type: 'string' },
        'public-key': { type: 'string' },
        adapter: { type: 'string', multiple: true },
        'allow-base-mismatch': { type: 'boolean' },
        'kv-cache-mb': { type: 'string' },
        'kv-cache-dtype': { type: 'string' },
        'no-batching': { type: 'boolean' },
        'no-prefix-cache': { type: 'boolean' },
        'kv-reserve': { type: 'string' },
      },
      'serve',
    );
    if (positionals.length !== 1)
      throw new UsageError(`serve takes one MODEL, got ${positionals.length}; see 'knobs serve --help'`);
    const host = (values.host as string | undefined) ?? '127.0.0.1';
    const keysPath = values.keys as string | undefined;
    const insecure = values['insecure-no-auth'] === true;
    if (keysPath !== undefined && insecure) throw new UsageError('give --keys FILE or --insecure-no-auth, not both');
    if (keysPath === undefined && !insecure)
      throw new UsageError(
        "serve needs --keys FILE (make one with 'knobs keys create --keys FILE --name NAME'), or --insecure-no-auth on a loopback host",
      );
    if (insecure && !LOOPBACK.test(host))
      throw new UsageError(
        `--insecure-no-auth serves only on a loopback host (127.0.0.1, ::1, localhost), not ${host}; use --keys`,
      );
    const int = (flag: string, fallback: number, min = 1): number =>
      values[flag] === undefined ? fallback : positiveInt(values[flag], `--${flag}`, min);
    const port = int('port', 8080, 0);
    if (port > 65535) throw new UsageError(`--port is at most 65535, got ${port}`);
    const batching = values['no-batching'] !== true;
    const kvCacheMb = int('kv-cache-mb', DEFAULT_KV_CACHE_MB);
    const kvCacheDtype = (values['kv-cache-dtype'] as string | undefined) ?? 'f32';
    if (!(KV_CACHE_DTYPES as readonly string[]).includes(kvCacheDtype))
      throw new UsageError(`--kv-cache-dtype is one of ${KV_CACHE_DTYPES.join(', ')}, got ${kvCacheDtype}`);
    const kvReserve = (values['kv-reserve'] as string | undefined) ?? 'expected';
    if (!(KV_RESERVES as readonly string[]).includes(kvReserve))
      throw new UsageError(`--kv-reserve is one of ${KV_RESERVES.join(', ')}, got ${kvReserve}`);
    for (const flag of ['kv-cache-dtype', 'kv-reserve', 'no-prefix-cache'])
      if (!batching && values[flag] !== undefined)
        throw new UsageError(`--${flag} sets the batching engine's cache; it does not apply with --no-batching`);
    const limits = {
      maxConcurrency: int('max-concurrency', batching ? BATCHED_CONCURRENCY : SERVER_DEFAULTS.maxConcurrency),
      maxQueue: int('queue', SERVER_DEFAULTS.maxQueue, 0),
      maxTokens: int('max-tokens', SERVER_DEFAULTS.maxTokens),
      maxBody: int('max-body', SERVER_DEFAULTS.maxBody),
      maxN: int('max-n', SERVER_DEFAULTS.maxN),
      deadlineMs: int('deadline-ms', SERVER_DEFAULTS.deadlineMs),
    };
    // A request with one prompt may always ask for --max-n choices.
    const maxChoices = int('max-choices', Math.max(SERVER_DEFAULTS.maxChoices, limits.maxN));
    const path = positionals[0]!;
    const id = (values.name as string | undefined) ?? basename(resolve(path));
    const adapters = ((values.adapter as string[] | undefined) ?? []).map(parseAdapterSpec);
    // The server never sees anything but the opened model: sealed weights stay in memory.
    const opened = await openLanguageModel(path, {
      masterKey: await readMasterKey(values['master-key-file'] as string | undefined, process.env),
      publicKey: values['public-key'] as string | undefined,
    });
    const log = (entry: Record<string, unknown>): void =>
      io.stderr(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
    let engine: BatchEngine | null = null;
    const models = await servedModels(opened, {
      id,
      chat: chatTemplateOf(opened),
      adapters,
      allowBaseMismatch: values['allow-base-mismatch'] === true,
      batched: (set) => {
        if (!batching) return null;
        const opening = openBatchEngine(opened, {
          kvCacheMb,
          kvCacheDtype: kvCacheDtype as KvCacheDtype,
          prefixCache: values['no-prefix-cache'] !== true,
          kvReserve: kvReserve as KvReserve,
          adapters: set ?? undefined,
        });
        if (opening.engine === null) {
          log({ event: 'batching_off', reason: opening.reason });
          return null;
        }
        const batchEngine = opening.engine;
        engine = batchEngine;
        const { kv } = batchEngine;
        log({
          event: 'batching',
          kv_cache: {
            dtype: kv.dtype,
            blocks: kv.totalBlocks,
            positions: kv.totalBlocks * KV_BLOCK,
            prefix_cache: batchEngine.prefixCache,
            reserve: batchEngine.kvReserve,
          },
        });
        return (name) => new BatchGenerator(opened, batchEngine, name);
      },
    });
    const keys = keysPath === undefined ? null : SqliteKeyStore.open(keysPath, { create: false });
    keys?.clearReservations();
    const api = createApiServer({
      ...SERVER_DEFAULTS,
      ...limits,
      maxChoices,
      keys,
      models,
      kvBlocks: engine === null ? undefined : () => engine!.kvGauges(),
      log,
    });
    const url = await api.listen(port, host);
    io.stdout(`${JSON.stringify({ url })}\n`);
    const signal = await new Promise<NodeJS.Signals>((done) => {
      process.once('SIGTERM', () => done('SIGTERM'));
      process.once('SIGINT', () => done('SIGINT'));
    });
    io.stderr(`${JSON.stringify({ time: new Date().toISOString(), event: 'draining', signal })}\n`);
    await api.drain();
    await keys?.close();
    return signal === 'SIGINT' ? 130 : 0;
  },
};
