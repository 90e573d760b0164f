/**
 * POST /v1/completions and /v1/chat/completions once the body is parsed and the key admitted:
 * request fields → GenerationParams, the n choices generated one after another, and the answer in
 * OpenAI's shapes — one JSON object, or server-sent events ending in `data: [DONE]`.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { ApiError, invalidRequest } from './api-error.js';
import type { ChatTemplate } from './chat-template.js';
import type { GenerationChunk, GenerationParams, GenerationResult, TextGenerator, TokenLogprob } from './generation.js';
import type { ChatRequest, CompletionRequest } from './requests.js';

export interface ServedModel {
  id: string;
  created: number;
  generator: TextGenerator;
  chat: ChatTemplate;
  /** For a LoRA adapter: the id of the base it runs on (absent for a base). */
  parent?: string;
}

export type Kind = 'chat' | 'completion';

/** One prompt of a request, with what generating from it needs. */
export interface PreparedPrompt {
  params: GenerationParams;
  promptTokens: number;
}

/** A request turned into what generation needs, checked against the model and the server's caps. */
export interface PreparedRequest {
  kind: Kind;
  model: ServedModel;
  /**
   * The prompts in order (chat: one). Choice `index` is `prompt × n + j` (OpenAI's order): prompt
   * i's n choices, then prompt i + 1's.
   */
  prompts: PreparedPrompt[];
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** Prompt tokens over all prompts (each counted once, whatever n). */
  promptTokens: number;
  /** Tokens the quota reserves: every prompt plus n × its max_tokens. */
  reserve: number;
}

export interface Caps {
  maxTokens: number;
  maxN: number;
  /** Most choices (prompts × n) one request may ask for. */
  maxChoices: number;
}

function messageText(content: ChatRequest['messages'][number]['content']): string {
  if (content === null) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

/** A completions `prompt` as a list: a string, a list of strings, token ids, or a list of token-id lists. */
function completionPrompts(prompt: CompletionRequest['prompt']): (string | readonly number[])[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return prompt as (string | number[])[];
}

export function prepare(
  kind: Kind,
  body: ChatRequest | CompletionRequest,
  model: ServedModel,
  caps: Caps,
): PreparedRequest {
  const g = model.generator;
  let prompts: (string | readonly number[])[];
  let maxTokens: number | null | undefined;
  let topLogprobs: number | null;
  if (kind === 'chat') {
    const chat = body as ChatRequest;
    prompts = [model.chat.render(chat.messages.map((m) => ({ role: m.role, content: messageText(m.content) })))];
    maxTokens = chat.max_completion_tokens ?? chat.max_tokens;
    topLogprobs = chat.logprobs ? (chat.top_logprobs ?? 0) : null;
    if (!chat.logprobs && (chat.top_logprobs ?? 0) > 0)
      throw invalidRequest('invalid_value', 'top_logprobs needs logprobs: true', 'top_logprobs');
  } else {
    const c = body as CompletionRequest;
    prompts = completionPrompts(c.prompt);
    maxTokens = c.max_tokens;
    topLogprobs = c.logprobs ?? null;
  }
  const n = body.n ?? 1;
  if (n > caps.maxN) throw invalidRequest('invalid_value', `n is at most ${caps.maxN} on this server, got ${n}`, 'n');
  if (prompts.length * n > caps.maxChoices)
    throw invalidRequest(
      'invalid_value',
      `this request asks for ${prompts.length} prompts × n = ${n}, ${prompts.length * n} choices; this server answers at most ${caps.maxChoices} per request (send the prompts in several requests)`,
      'prompt',
    );
  const maxParam =
    kind === 'chat' && (body as ChatRequest).max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  if (maxTokens != null && maxTokens > caps.maxTokens)
    throw invalidRequest(
      'max_tokens_too_large',
      `${maxParam} is at most ${caps.maxTokens} on this server, got ${maxTokens}`,
      maxParam,
    );
  const logitBias = new Map<number, number>();
  for (const [id, bias] of Object.entries(body.logit_bias ?? {})) {
    if (Number(id) >= g.vocabSize)
      throw invalidRequest(
        'invalid_value',
        `logit_bias token id ${id} is not below the vocabulary size ${g.vocabSize}`,
        'logit_bias',
      );
    logitBias.set(Number(id), bias);
  }
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  const shared = {
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    seed: body.seed ?? randomInt(2 ** 47),
    stop,
    ignoreEos: body.ignore_eos === true,
    topLogprobs,
    presencePenalty: body.presence_penalty ?? 0,
    frequencyPenalty: body.frequency_penalty ?? 0,
    logitBias,
  };
  const prepared = prompts.map((prompt, i): PreparedPrompt => {
    // Messages name the prompt by its place when there are several.
    const where = prompts.length > 1 ? ` (prompt ${i})` : '';
    const param = kind === 'chat' ? 'messages' : prompts.length > 1 ? `prompt.${i}` : 'prompt';
    if (typeof prompt !== 'string' && prompt.some((id) => id >= g.vocabSize))
      throw invalidRequest(
        'invalid_value',
        `prompt token ids must be below the vocabulary size ${g.vocabSize}${where}`,
        param,
      );
    const promptTokens = g.promptTokens(prompt);
    if (promptTokens === 0)
      throw invalidRequest(
        'invalid_value',
        `the prompt is empty and the tokenizer adds no start token; send some text${where}`,
        param,
      );
    const room = g.contextLength - promptTokens;
    if (room < 1 || (maxTokens != null && maxTokens > room))
      throw invalidRequest(
        'context_length_exceeded',
        `this model's context is ${g.contextLength} tokens; the prompt${where} has ${promptTokens}` +
          (maxTokens != null ? ` and ${maxParam} asks for ${maxTokens}` : '') +
          '; shorten the prompt or lower the token count',
        maxTokens != null && room >= 1 ? maxParam : param,
      );
    const max = Math.min(maxTokens ?? caps.maxTokens, room);
    g.checkFits?.(promptTokens, max);
    return { promptTokens, params: { ...shared, prompt, maxTokens: max } };
  });
  return {
    kind,
    model,
    prompts: prepared,
    n,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    promptTokens: prepared.reduce((sum, p) => sum + p.promptTokens, 0),
    reserve: prepared.reduce((sum, p) => sum + p.promptTokens + n * p.params.maxTokens, 0),
  };
}

export interface Outcome {
  promptTokens: number;
  completionTokens: number;
  /** Why generation stopped early, when it did. */
  cancelled: boolean;
}

/** Chat logprobs content entries, or the completions' parallel arrays. */
function chatLogprobs(lps: readonly TokenLogprob[]) {
  return {
    content: lps.map((l) => ({
      token: l.token,
      logprob: l.logprob,
      bytes: l.bytes,
      top_logprobs: l.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
    })),
    refusal: null,
  };
}

function completionLogprobs(lps: readonly TokenLogprob[], offset: number) {
  const text_offset: number[] = [];
  let at = offset;
  for (const l of lps) {
    text_offset.push(at);
    at += l.token.length;
  }
  return {
    tokens: lps.map((l) => l.token),
    token_logprobs: lps.map((l) => l.logprob),
    top_logprobs: lps.map((l) => Object.fromEntries(l.top.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}

const usageOf = (prompt: number, completion: number) => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  total_tokens: prompt + completion,
});

/**
 * Generates the n choices and writes the answer. Throws an ApiError before anything is written
 * (non-streaming); once streaming, an error becomes an SSE error event.
 */
export async function respond(req: PreparedRequest, res: ServerResponse, signal: AbortSignal): Promise<Outcome> {
  const id = (req.kind === 'chat' ? 'chatcmpl-' : 'cmpl-') + randomBytes(12).toString('hex');
  const created = Math.floor(Date.now() / 1000);
  const base = {
    id,
    object: req.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
    created,
    model: req.model.id,
  };
  const sse = (data: unknown): void => {
    if (!res.destroyed) res.write(`data: ${JSON.stringify(data)}\n\n`);
  };
  let completionTokens = 0;
  const results: { result: GenerationResult; logprobs: TokenLogprob[] }[] = [];
  if (req.stream) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
  }
  for (let index = 0; index < req.prompts.length * req.n; index++) {
    const prompt = req.prompts[Math.floor(index / req.n)]!;
    const j = index % req.n;
    const logprobs: TokenLogprob[] = [];
    let offset = 0;
    const usageField = req.includeUsage ? { usage: null } : {};
    if (req.stream && req.kind === 'chat')
      sse({
        ...base,
        choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
        ...usageField,
      });
    const onChunk = (c: GenerationChunk): void => {
      if (c.logprob) logprobs.push(c.logprob);
      if (!req.stream || (c.text === '' && !c.logprob)) return;
      const lp =
        c.logprob === null
          ? null
          : req.kind === 'chat'
            ? chatLogprobs([c.logprob])
            : completionLogprobs([c.logprob], offset);
      offset += c.text.length;
      sse({
        ...base,
        choices: [
          req.kind === 'chat'
            ? { index, delta: { content: c.text }, logprobs: lp, finish_reason: null }
            : { index, text: c.text, logprobs: lp, finish_reason: null },
        ],
        ...usageField,
      });
    };
    // seed + j: each prompt's choices are those it gets when sent alone.
    const result = await req.model.generator.generate(
      { ...prompt.params, seed: prompt.params.seed + j },
      signal,
      onChunk,
    );
    completionTokens += result.completionTokens;
    if (result.finishReason === 'cancelled') {
      return { promptTokens: req.promptTokens, completionTokens, cancelled: true };
    }
    results.push({ result, logprobs });
    if (req.stream)
      sse({
        ...base,
        choices: [
          req.kind === 'chat'
            ? { index, delta: {}, logprobs: null, finish_reason: result.finishReason }
            : { index, text: '', logprobs: null, finish_reason: result.finishReason },
        ],
        ...usageField,
      });
  }
  const usage = usageOf(req.promptTokens, completionTokens);
  if (req.stream) {
    if (req.includeUsage) sse({ ...base, choices: [], usage });
    res.end('data: [DONE]\n\n');
  } else {
    const withLogprobs = req.prompts[0]!.params.topLogprobs !== null;
    const choices = results.map(({ result, logprobs }, index) =>
      req.kind === 'chat'
        ? {
            index,
            message: { role: 'assistant', content: result.text, refusal: null },
            logprobs: withLogprobs ? chatLogprobs(logprobs) : null,
            finish_reason: result.finishReason,
          }
        : {
            index,
            text: result.text,
            logprobs: withLogprobs ? completionLogprobs(logprobs, 0) : null,
            finish_reason: result.finishReason,
          },
    );
    const body = JSON.stringify({
      ...base,
      object: req.kind === 'chat' ? 'chat.completion' : 'text_completion',
      choices,
      usage,
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  }
  return { promptTokens: req.promptTokens, completionTokens, cancelled: false };
}

/** An error after the SSE stream began: one event in OpenAI's error shape, then the stream ends. */
export function streamError(res: ServerResponse, err: ApiError): void {
  if (res.destroyed) return;
  res.end(`data: ${JSON.stringify(err.body())}\n\n`);
}
