/**
 * A served tiny model on loopback for the server tests, soak and bench: the Llama fixture with the
 * character tokenizer, its max_position_embeddings raised (rotary positions have no weights) so
 * that generations can run long enough to be interrupted.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLanguageModel } from '../../src/load/language-model.js';
import { chatTemplateOf } from '../../src/server/chat-template.js';
import { type AdapterSpec, servedModels } from '../../src/server/served-models.js';
import { type ApiServer, SERVER_DEFAULTS, type ServerOptions, createApiServer } from '../../src/server/server.js';
import OpenAI from 'openai';
import { tinyTextModel } from './char-tokenizer.js';

export const CHAT_TEMPLATE =
  '{{ bos_token }}{% for m in messages %}{{ m.role }} {{ m.content }}.{% endfor %}{% if add_generation_prompt %}assistant {% endif %}';

/** Makes the model directory in a new temporary directory; `context` sets max_position_embeddings. */
export async function makeServedModelDir(context = 4096): Promise<{ tmp: string; dir: string }> {
  const tmp = await mkdtemp(join(tmpdir(), 'knobs-serve-'));
  const dir = join(tmp, 'tiny');
  await tinyTextModel(dir, CHAT_TEMPLATE);
  const configPath = join(dir, 'config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(configPath, JSON.stringify({ ...config, max_position_embeddings: context }));
  return { tmp, dir };
}

export interface Served {
  api: ApiServer;
  url: string;
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * Serves `dir` as model "tiny" (and `adapters` on it, each as its own id) on 127.0.0.1 with a free
 * port; `masterKey` opens a sealed `dir`.
 */
export async function serveTiny(
  dir: string,
  opts: Partial<ServerOptions> = {},
  { adapters = [], masterKey = null }: { adapters?: readonly AdapterSpec[]; masterKey?: Uint8Array | null } = {},
): Promise<Served> {
  const opened = await openLanguageModel(dir, { masterKey });
  const logs: Record<string, unknown>[] = [];
  const api = createApiServer({
    ...SERVER_DEFAULTS,
    keys: null,
    models: await servedModels(opened, { id: 'tiny', chat: chatTemplateOf(opened), adapters, created: 0 }),
    log: (e) => logs.push(e),
    ...opts,
  });
  const url = await api.listen(0, '127.0.0.1');
  return { api, url, logs, close: () => api.drain() };
}

export interface ServedWithClient {
  tmp: string;
  dir: string;
  served: Served;
  /** The official `openai` client pointed at the server (no retries). */
  client: OpenAI;
  /** Drains the server and removes the temporary directory. */
  close(): Promise<void>;
}

/** A new tiny model directory (context `context`), served keyless with `opts`, and a client for it. */
export async function serveTinyWithClient(context: number, opts: Partial<ServerOptions>): Promise<ServedWithClient> {
  const { tmp, dir } = await makeServedModelDir(context);
  const served = await serveTiny(dir, opts);
  const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  return {
    tmp,
    dir,
    served,
    client,
    close: async () => {
      await served.close();
      await rm(tmp, { recursive: true, force: true });
    },
  };
}
