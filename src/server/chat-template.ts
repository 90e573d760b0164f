/**
 * Chat messages → one prompt: the model's chat_template (tokenizer_config.json) rendered with
 * @huggingface/jinja as transformers' apply_chat_template does (messages, add_generation_prompt,
 * bos_token, eos_token), or, for a model without one, DEFAULT_TEMPLATE: each message as
 * `role: content` on its own line, then `assistant:`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { FormatError } from '../errors.js';
import { TOKENIZER_CONFIG_NAME, parseTokenizerConfig } from '../tokenizer/config.js';
import { invalidRequest } from './api-error.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export const DEFAULT_TEMPLATE =
  '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}';

export class ChatTemplate {
  private readonly template: Template;
  constructor(
    readonly source: string,
    private readonly specials: { bos_token: string; eos_token: string },
    /** Whether the tokenizer adds the bos token itself: then a rendered leading one is dropped. */
    private readonly tokenizerAddsBos: boolean,
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      throw new FormatError(
        'chat_template_invalid',
        `the model's chat_template does not parse: ${(err as Error).message}`,
      );
    }
  }

  render(messages: readonly ChatMessage[]): string {
    let text: string;
    try {
      text = this.template.render({ messages, add_generation_prompt: true, ...this.specials });
    } catch (err) {
      // Templates raise on conversations they do not accept (e.g. roles that do not alternate).
      throw invalidRequest(
        'chat_template_error',
        `the model's chat template refused these messages: ${(err as Error).message.slice(0, 300)}`,
        'messages',
      );
    }
    const bos = this.specials.bos_token;
    return this.tokenizerAddsBos && bos !== '' && text.startsWith(bos) ? text.slice(bos.length) : text;
  }
}

/** The chat template of the model directory `dir` (its tokenizer_config.json), or the default one. */
export async function loadChatTemplate(dir: string, tokenizerAddsBos: boolean): Promise<ChatTemplate> {
  const path = join(dir, TOKENIZER_CONFIG_NAME);
  let json: unknown = null;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'EISDIR')
      throw new FormatError('chat_template_invalid', `cannot read ${path}: ${(err as Error).message}`, { path });
  }
  const config = json === null ? null : parseTokenizerConfig(json, path);
  return new ChatTemplate(
    config?.chatTemplate ?? DEFAULT_TEMPLATE,
    { bos_token: config?.bosToken ?? '', eos_token: config?.eosToken ?? '' },
    tokenizerAddsBos,
  );
}
