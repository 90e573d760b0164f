/**
 * A language model from a signed bundle, verified as it loads: every file the loaders read comes
 * through openVerifiedBundle, which hands over a file's bytes only when they hash to the signed
 * digest (see src/release/verified-files.ts). A bundle made from a knobs run (it holds recipe.json)
 * behaves as the run would: byte-level runs need no tokenizer, sampling defaults to temperature 1.
 * A bundle made from a GGUF file (the only model file it holds is one .gguf) loads that file.
 */
import { parseJsonFile } from '../io/json.js';
import { parseJsonObject, readTextFile } from '../models/hf/files.js';
import { samplingDefaults } from '../models/hf/generate.js';
import { loadHfModel } from '../models/hf/load.js';
import { tokenizerCodec } from '../models/hf/text.js';
import { openVerifiedBundle } from '../release/verified-files.js';
import { TOKENIZER_NAME } from '../tokenizer/config.js';
import { Tokenizer, checkTokenizerFitsVocab } from '../tokenizer/tokenizer.js';
import { FormatError } from '../errors.js';
import { RECIPE_NAME } from '../train/run-dir.js';
import { parseRecipe } from '../train/recipe.js';
import { readChatTemplate } from './chat-template-source.js';
import { openGgufLanguageModel } from './gguf-model.js';
import type { OpenedBase } from './language-model.js';

export async function openVerifiedLanguageModel(path: string, publicKey: string): Promise<OpenedBase> {
  const files = await openVerifiedBundle(path, publicKey);
  const signed = [...files.listing.digests.keys()];
  const gguf = signed.filter((name) => name.toLowerCase().endsWith('.gguf'));
  if (gguf.length === 1 && !signed.includes('config.json')) {
    const source = (await files.open(gguf[0]!))!;
    return openGgufLanguageModel(source, path);
  }
  const loaded = await loadHfModel(files);
  const recipeFile = await readTextFile(files, RECIPE_NAME);
  const recipe = recipeFile
    ? parseRecipe(parseJsonFile(recipeFile.text, recipeFile.path, 'recipe_not_json'), recipeFile.path)
    : null;
  const byteLevel = recipe !== null && recipe.tokenizer === 'bytes';
  let tokenizer: Tokenizer | null = null;
  if (!byteLevel) {
    const file = await readTextFile(files, TOKENIZER_NAME);
    if (!file) {
      throw new FormatError(
        'hf_no_tokenizer',
        `${path} has no ${TOKENIZER_NAME}; knobs needs the model's tokenizer to turn text into tokens`,
        {
          dir: path,
        },
      );
    }
    tokenizer = Tokenizer.fromJSON(parseJsonObject(file.text, file.path), file.path);
    checkTokenizerFitsVocab(tokenizer, loaded.config.vocab_size, `${path}/config.json`);
  }
  const textOptions = tokenizer ? { codec: tokenizerCodec(tokenizer) } : {};
  const chatTemplate = await readChatTemplate(files);
  if (recipe)
    return {
      kind: 'run',
      path,
      model: loaded.model,
      tokenizer,
      textOptions,
      defaults: { temperature: 1, topK: 0, topP: 1 },
      chatTemplate,
    };
  return {
    kind: 'hf',
    path,
    model: loaded.model,
    tokenizer,
    textOptions: { ...textOptions, eosTokenId: loaded.generationConfig.eosTokenIds },
    defaults: samplingDefaults(loaded.generationConfig),
    chatTemplate,
  };
}
