/**
 * The request bodies of POST /v1/completions and /v1/chat/completions, checked in three passes so
 * each failure gets its own stable code: a field OpenAI does not define → `unknown_parameter`; an
 * OpenAI field knobs does not implement, set to anything but its neutral value →
 * `unsupported_parameter`; then the zod schema of the implemented fields (types and ranges) →
 * `invalid_value` naming the field.
 */
import { z } from 'zod';
import { invalidRequest } from './api-error.js';

/** Most stop strings (OpenAI's limit) and most characters in one. */
const MAX_STOPS = 4;
const MAX_STOP_LENGTH = 256;
/** Most logit_bias entries, and the most top_logprobs (OpenAI's 20). */
const MAX_LOGIT_BIAS = 300;
export const MAX_TOP_LOGPROBS = 20;
const MAX_MESSAGES = 1024;
/** Most prompts in one completions request (the server's --max-choices is the working cap). */
const MAX_PROMPTS = 1024;

const nullish = <T extends z.ZodType>(t: T) => t.nullish();
const tokenIds = z
  .array(
    z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1),
  )
  .min(1, 'a token-id prompt needs at least one id');
const tokenCount = z
  .number()
  .int()
  .min(1)
  .max(1 << 30);

/** What both routes implement. */
const sampling = {
  model: z.string().min(1).max(256),
  stream: nullish(z.boolean()),
  stream_options: nullish(z.strictObject({ include_usage: z.boolean().optional() })),
  temperature: nullish(z.number().min(0).max(2)),
  top_p: nullish(z.number().min(0).max(1)),
  max_tokens: nullish(tokenCount),
  n: nullish(z.number().int().min(1).max(128)),
  seed: nullish(z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER)),
  stop: nullish(z.union([z.string().max(MAX_STOP_LENGTH), z.array(z.string().max(MAX_STOP_LENGTH)).max(MAX_STOPS)])),
  presence_penalty: nullish(z.number().min(-2).max(2)),
  frequency_penalty: nullish(z.number().min(-2).max(2)),
  logit_bias: nullish(
    z
      .record(z.string().regex(/^[0-9]{1,9}$/, 'keys are token ids'), z.number().min(-100).max(100))
      .refine((o) => Object.keys(o).length <= MAX_LOGIT_BIAS, `at most ${MAX_LOGIT_BIAS} entries`),
  ),
  user: nullish(z.string().max(512)),
  /** An extension (llama.cpp's server and vLLM): keep going past the eos token. */
  ignore_eos: nullish(z.boolean()),
};

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });
const content = z.union([z.string(), z.array(textPart).max(MAX_MESSAGES)]);
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: content.nullable(),
  name: z.string().max(256).optional(),
});

export const chatSchema = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1).max(MAX_MESSAGES),
  max_completion_tokens: nullish(tokenCount),
  logprobs: nullish(z.boolean()),
  top_logprobs: nullish(z.number().int().min(0).max(MAX_TOP_LOGPROBS)),
});

const promptList = z.union([z.array(z.string()), tokenIds, z.array(tokenIds)]);

/**
 * OpenAI's four forms of `prompt`: a string, a list of strings, token ids, a list of token-id
 * lists. Checked by hand so that each wrong shape gets its own message (a zod union says only
 * "Invalid input").
 */
const prompt = z.unknown().transform((v, ctx): string | z.infer<typeof promptList> => {
  const fail = (message: string) => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) return fail('a string, a list of strings, token ids, or a list of token-id lists');
  if (v.length === 0)
    return fail('an empty list holds no prompt; send a string, strings, token ids or lists of token ids');
  if (v.length > MAX_PROMPTS) return fail(`at most ${MAX_PROMPTS} prompts per request, got ${v.length}`);
  const parsed = promptList.safeParse(v);
  if (!parsed.success)
    return fail(
      'a prompt list holds only strings, only token ids (integers from 0), or only non-empty lists of token ids',
    );
  return parsed.data;
});

export const completionSchema = z.strictObject({
  ...sampling,
  prompt,
  logprobs: nullish(z.number().int().min(0).max(MAX_TOP_LOGPROBS)),
});

export type ChatRequest = z.infer<typeof chatSchema>;
export type CompletionRequest = z.infer<typeof completionSchema>;

const isNull = (v: unknown) => v === null || v === undefined;
const isEmpty = (v: unknown) => isNull(v) || (Array.isArray(v) && v.length === 0);

/** OpenAI fields knobs does not implement, with the values at which they change nothing. */
const CHAT_NEUTRAL: Record<string, (v: unknown, body: Record<string, unknown>) => boolean> = {
  audio: isNull,
  function_call: (v) => isNull(v) || v === 'none',
  functions: isEmpty,
  tools: isEmpty,
  tool_choice: (v, body) => isNull(v) || v === 'none' || (v === 'auto' && isEmpty(body.tools)),
  parallel_tool_calls: () => true,
  metadata: (v) => isNull(v) || (typeof v === 'object' && Object.keys(v as object).length === 0),
  modalities: (v) => isNull(v) || (Array.isArray(v) && v.length === 1 && v[0] === 'text'),
  prediction: isNull,
  reasoning_effort: isNull,
  response_format: (v) => isNull(v) || (typeof v === 'object' && (v as { type?: unknown }).type === 'text'),
  service_tier: (v) => isNull(v) || v === 'auto' || v === 'default',
  store: (v) => isNull(v) || v === false,
  web_search_options: isNull,
  verbosity: isNull,
  prompt_cache_key: () => true,
  safety_identifier: () => true,
};

const COMPLETION_NEUTRAL: Record<string, (v: unknown, body: Record<string, unknown>) => boolean> = {
  echo: (v) => isNull(v) || v === false,
  suffix: (v) => isNull(v) || v === '',
  best_of: (v, body) => isNull(v) || v === 1 || v === (body.n ?? 1),
};

function parseBody<S extends z.ZodObject>(
  body: unknown,
  schema: S,
  neutral: Record<string, (v: unknown, body: Record<string, unknown>) => boolean>,
): z.infer<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw invalidRequest('invalid_body', 'the request body must be a JSON object');
  const o = body as Record<string, unknown>;
  const known = new Set([...Object.keys(schema.shape), ...Object.keys(neutral)]);
  for (const key of Object.keys(o)) {
    if (!known.has(key))
      throw invalidRequest(
        'unknown_parameter',
        `unknown parameter '${key.slice(0, 64)}'; see docs/server.md for the fields this server reads`,
        key.slice(0, 64),
      );
  }
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(o)) {
    const isNeutral = neutral[key];
    if (!isNeutral) rest[key] = value;
    else if (!isNeutral(value, o))
      throw invalidRequest(
        'unsupported_parameter',
        `'${key}' is not supported by this server; leave it out (or at its default)`,
        key,
      );
  }
  const parsed = schema.safeParse(rest);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const param = issue.path.map(String).join('.');
    throw invalidRequest('invalid_value', `${param || 'body'}: ${issue.message}`, param || null);
  }
  return parsed.data;
}

export const parseChatRequest = (body: unknown): ChatRequest => parseBody(body, chatSchema, CHAT_NEUTRAL);
export const parseCompletionRequest = (body: unknown): CompletionRequest =>
  parseBody(body, completionSchema, COMPLETION_NEUTRAL);
