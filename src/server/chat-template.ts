/**
 * Chat messages → one prompt: the model's chat_template (chat_template.jinja or tokenizer_config.json,
 * or a GGUF file's tokenizer.chat_template; see src/load/chat-template-source.ts) rendered with
 * @huggingface/jinja as transformers' apply_chat_template does (messages, add_generation_prompt,
 * bos_token, eos_token), or, for a model without one, DEFAULT_TEMPLATE: each message as
 * `role: content` on its own line, then `assistant:`.
 */
import { Template } from '@huggingface/jinja';
import { FormatError } from '../errors.js';
import type { OpenedLanguageModel } from '../load/language-model.js';
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

/**
 * The chat template of an opened model (read through its own files: a sealed model's template
 * comes from its decrypted bytes), or the default one when it has none.
 */
export function chatTemplateOf(opened: Pick<OpenedLanguageModel, 'chatTemplate' | 'textOptions'>): ChatTemplate {
  const { template, bosToken, eosToken } = opened.chatTemplate;
  const tokenizerAddsBos = (opened.textOptions.codec?.encode('').length ?? 0) > 0;
  return new ChatTemplate(template ?? DEFAULT_TEMPLATE, { bos_token: bosToken, eos_token: eosToken }, tokenizerAddsBos);
}
