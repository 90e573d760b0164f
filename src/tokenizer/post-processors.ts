/**
 * Post-processors (tokenizer.json's `post_processor`): what `encode` adds around one sequence when
 * add_special_tokens is on. Supported: TemplateProcessing (its `single` template), ByteLevel (offsets
 * only: no change to ids or tokens), BertProcessing and RobertaProcessing ([CLS] A [SEP]), Sequence.
 */
import type { Encoded } from './bpe.js';
import { JsonReader, invalidTokenizer, unsupportedComponent } from './errors.js';

export type PostProcessor = (encoded: Encoded) => Encoded;

export function parsePostProcessor(json: unknown, r: JsonReader, at = 'post_processor'): PostProcessor {
  const o = r.object(json, at);
  const type = r.string(o.type, `${at}.type`);
  switch (type) {
    case 'Sequence': {
      const steps = r
        .array(o.processors, `${at}.processors`)
        .map((p, i) => parsePostProcessor(p, r, `${at}.processors[${i}]`));
      return (e) => steps.reduce((acc, step) => step(acc), e);
    }
    case 'ByteLevel':
      return (e) => e;
    case 'TemplateProcessing':
      return templateProcessor(o, r, at);
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const [cls, sep] = (['cls', 'sep'] as const).map((k) => {
        const pair = r.array(o[k], `${at}.${k}`);
        return { token: r.string(pair[0], `${at}.${k}[0]`), id: r.uint(pair[1], `${at}.${k}[1]`) };
      });
      return (e) => ({ ids: [cls!.id].concat(e.ids, sep!.id), tokens: [cls!.token].concat(e.tokens, sep!.token) });
    }
    default:
      throw unsupportedComponent(r.source, `${at} ${type}`, 'is not supported');
  }
}

function templateProcessor(o: Record<string, unknown>, r: JsonReader, at: string): PostProcessor {
  const specials = r.object(o.special_tokens ?? {}, `${at}.special_tokens`);
  const pieces = r.array(o.single, `${at}.single`).map((p, i): Encoded | 'A' => {
    const where = `${at}.single[${i}]`;
    const piece = r.object(p, where);
    if (piece.Sequence !== undefined) {
      const seq = r.string(r.object(piece.Sequence, `${where}.Sequence`).id, `${where}.Sequence.id`);
      if (seq !== 'A')
        throw unsupportedComponent(
          r.source,
          `${where}.Sequence.id`,
          `${JSON.stringify(seq)} is for pairs; one sequence is "A"`,
        );
      return 'A';
    }
    if (piece.SpecialToken === undefined)
      throw invalidTokenizer(r.source, where, 'must be {"SpecialToken": …} or {"Sequence": …}');
    const name = r.string(r.object(piece.SpecialToken, `${where}.SpecialToken`).id, `${where}.SpecialToken.id`);
    if (!Object.hasOwn(specials, name))
      throw invalidTokenizer(
        r.source,
        `${at}.special_tokens`,
        `has no entry for ${JSON.stringify(name)}, which ${where} uses`,
      );
    const special = r.object(specials[name], `${at}.special_tokens[${JSON.stringify(name)}]`);
    const ids = r
      .array(special.ids, `${at}.special_tokens[${JSON.stringify(name)}].ids`)
      .map((id, k) => r.uint(id, `${at}.special_tokens[${JSON.stringify(name)}].ids[${k}]`));
    const tokens = r
      .array(special.tokens, `${at}.special_tokens[${JSON.stringify(name)}].tokens`)
      .map((t, k) => r.string(t, `${at}.special_tokens[${JSON.stringify(name)}].tokens[${k}]`));
    if (ids.length !== tokens.length)
      throw invalidTokenizer(
        r.source,
        `${at}.special_tokens[${JSON.stringify(name)}]`,
        `has ${ids.length} ids but ${tokens.length} tokens`,
      );
    return { ids, tokens };
  });
  return (e) => {
    const out: Encoded = { ids: [], tokens: [] };
    for (const p of pieces) {
      const part = p === 'A' ? e : p;
      // concat, not push(...): a long text's ids would overflow the call stack as arguments
      out.ids = out.ids.concat(part.ids);
      out.tokens = out.tokens.concat(part.tokens);
    }
    return out;
  };
}

/** The ids a post-processor may emit (for the vocabulary check). */
export function postProcessorIds(json: unknown): number[] {
  const o = json as Record<string, unknown> | null;
  if (!o || typeof o !== 'object') return [];
  if (o.type === 'Sequence' && Array.isArray(o.processors)) return o.processors.flatMap(postProcessorIds);
  if (o.type === 'TemplateProcessing' && o.special_tokens && typeof o.special_tokens === 'object') {
    return Object.values(o.special_tokens as Record<string, { ids?: unknown }>).flatMap((s) =>
      Array.isArray(s.ids) ? (s.ids as number[]) : [],
    );
  }
  if (o.type === 'BertProcessing' || o.type === 'RobertaProcessing')
    return [o.cls, o.sep].flatMap((p) => (Array.isArray(p) && typeof p[1] === 'number' ? [p[1]] : []));
  return [];
}
