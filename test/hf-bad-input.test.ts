/**
 * Bad Hugging Face model directories: each is a FormatError with a stable rule, naming the file,
 * tensor or field and what was expected — never a crash, a read outside the directory, or a model
 * that silently computes something other than what config.json describes.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { tensor } from '../src/ops/index.js';
import { repoRoot } from './harness/fixtures.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
const GPT2 = 'gpt2-tiny';
const SHARDED_GPT2 = 'gpt2-prefix-f16-shards';
const LLAMA = 'llama-gqa-bf16-llama3';
const MISTRAL = 'mistral-gqa-shards';
const INDEX = 'model.safetensors.index.json';

let tmp: string;
let n = 0;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'knobs-hf-bad-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A copy of fixture `name`, changed by `edit`. */
async function variant(name: string, edit: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(tmp, `${name}-${n++}`);
  await cp(join(HF_DIR, name), dir, { recursive: true });
  await edit(dir);
  return dir;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
}

async function editJson(path: string, change: (json: Record<string, unknown>) => void): Promise<void> {
  const json = await readJson(path);
  change(json);
  await writeFile(path, JSON.stringify(json));
}

const editConfig = (change: (json: Record<string, unknown>) => void) => (dir: string) =>
  editJson(join(dir, 'config.json'), change);

/** Rejects with FormatError `rule` whose message contains every string in `mentions`. */
async function rejects(
  dir: string,
  rule: string,
  mentions: string[],
  details: Record<string, unknown> = {},
): Promise<void> {
  await assert.rejects(loadHfModel(dir), (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected a FormatError, got ${String(e)}`);
    assert.equal(e.rule, rule, e.message);
    for (const m of mentions)
      assert.ok(e.message.includes(m), `message should mention ${JSON.stringify(m)}: ${e.message}`);
    for (const [key, value] of Object.entries(details)) assert.deepEqual(e.details[key], value, `details.${key}`);
    return true;
  });
}

describe('Hugging Face model directories: bad input', () => {
  it('a directory without weights', async () => {
    const dir = await variant(GPT2, (d) => unlink(join(d, 'model.safetensors')));
    await rejects(dir, 'hf_no_weights', [dir, 'model.safetensors', INDEX]);
  });

  it('a directory without config.json', async () => {
    const dir = await variant(GPT2, (d) => unlink(join(d, 'config.json')));
    await rejects(dir, 'hf_no_config', [dir, 'config.json']);
  });

  it('config.json that is not JSON, or not an object', async () => {
    await rejects(await variant(GPT2, (d) => writeFile(join(d, 'config.json'), '{"model_type": ')), 'hf_invalid_json', [
      'config.json',
    ]);
    await rejects(await variant(GPT2, (d) => writeFile(join(d, 'config.json'), '[1]')), 'hf_invalid_json', [
      'config.json',
      'an array',
    ]);
  });

  it('a shard index naming a missing shard', async () => {
    const dir = await variant(MISTRAL, (d) => unlink(join(d, 'model-00002-of-00002.safetensors')));
    await rejects(dir, 'hf_missing_shard', [INDEX, 'model-00002-of-00002.safetensors'], {
      shard: 'model-00002-of-00002.safetensors',
    });
  });

  for (const [shard, why] of [
    ['../outside.safetensors', 'contains ..'],
    ['/etc/passwd', 'is an absolute path'],
    ['sub/model.safetensors', 'has a directory part'],
    ['..', 'contains ..'],
  ] as const) {
    it(`a shard path ${JSON.stringify(shard)} (${why})`, async () => {
      const dir = await variant(MISTRAL, (d) =>
        editJson(join(d, INDEX), (j) => {
          (j.weight_map as Record<string, string>)['model.norm.weight'] = shard;
        }),
      );
      await rejects(dir, 'hf_bad_path', [INDEX, JSON.stringify(shard), why], { shard });
    });
  }

  it('a shard that is a symbolic link', async () => {
    const dir = await variant(MISTRAL, async (d) => {
      await cp(join(d, 'model-00002-of-00002.safetensors'), join(tmp, 'elsewhere.safetensors'));
      await unlink(join(d, 'model-00002-of-00002.safetensors'));
      await symlink(join(tmp, 'elsewhere.safetensors'), join(d, 'model-00002-of-00002.safetensors'));
    });
    await rejects(dir, 'hf_bad_path', ['model-00002-of-00002.safetensors', 'symbolic link']);
  });

  it('a tensor listed twice in the index', async () => {
    const dir = await variant(MISTRAL, async (d) => {
      const text = await readFile(join(d, INDEX), 'utf8');
      await writeFile(
        join(d, INDEX),
        text.replace('"weight_map": {', '"weight_map": {\n  "model.norm.weight": "model-00001-of-00002.safetensors",'),
      );
    });
    await rejects(dir, 'hf_duplicate_tensor', [INDEX, 'model.norm.weight', 'listed once']);
  });

  it('a tensor stored in two shards', async () => {
    const dir = await variant(SHARDED_GPT2, async (d) => {
      const first = join(d, 'model-00001-of-00002.safetensors');
      const { tensors } = await loadSafetensors(first);
      tensors.set('transformer.ln_f.bias', tensor(new Array(32).fill(0)).to('f16'));
      await saveSafetensors(first, tensors);
      await editJson(join(d, INDEX), (j) => {
        (j.weight_map as Record<string, string>)['transformer.ln_f.bias'] = 'model-00001-of-00002.safetensors';
      });
    });
    await rejects(dir, 'hf_duplicate_tensor', [
      'transformer.ln_f.bias',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'exactly one shard',
    ]);
  });

  it('a GPT-2 tensor under both its names (with and without transformer.)', async () => {
    const dir = await variant(GPT2, async (d) => {
      const path = join(d, 'model.safetensors');
      const { tensors } = await loadSafetensors(path);
      tensors.set('transformer.ln_f.bias', tensors.get('ln_f.bias')!);
      await saveSafetensors(path, tensors);
    });
    await rejects(dir, 'hf_duplicate_tensor', ['"ln_f.bias"', '"transformer.ln_f.bias"']);
  });

  it('an index that puts a tensor in a shard that lacks it', async () => {
    const dir = await variant(MISTRAL, (d) =>
      editJson(join(d, INDEX), (j) => {
        (j.weight_map as Record<string, string>)['model.layers.9.mlp.up_proj.weight'] =
          'model-00001-of-00002.safetensors';
      }),
    );
    await rejects(dir, 'hf_index_mismatch', [
      INDEX,
      'model.layers.9.mlp.up_proj.weight',
      'model-00001-of-00002.safetensors',
    ]);
  });

  it('config sizes that disagree with the tensors', async () => {
    await rejects(
      await variant(
        GPT2,
        editConfig((j) => {
          j.n_embd = 48;
        }),
      ),
      'hf_shape_mismatch',
      ['model.safetensors', '"wte.weight"', '[64, 32]', '[64, 48]'],
      { tensor: 'wte.weight' },
    );
    await rejects(
      await variant(
        LLAMA,
        editConfig((j) => {
          j.vocab_size = 80;
        }),
      ),
      'hf_shape_mismatch',
      ['"model.embed_tokens.weight"', '[80, 32]'],
    );
    await rejects(
      await variant(
        LLAMA,
        editConfig((j) => {
          j.num_key_value_heads = 4;
        }),
      ),
      'hf_shape_mismatch',
      ['k_proj.weight', '[16, 32]', '[32, 32]'],
    );
    await rejects(
      await variant(
        LLAMA,
        editConfig((j) => {
          j.num_hidden_layers = 3;
        }),
      ),
      'hf_missing_tensor',
      ['model.layers.2.', 'config.json'],
    );
    await rejects(
      await variant(
        LLAMA,
        editConfig((j) => {
          j.num_hidden_layers = 1;
        }),
      ),
      'hf_unexpected_tensor',
      ['model.layers.1.', 'config.json'],
    );
  });

  it('a tensor in a dtype knobs does not load', async () => {
    const dir = await variant(GPT2, async (d) => {
      const path = join(d, 'model.safetensors');
      const { tensors } = await loadSafetensors(path);
      tensors.set('ln_f.bias', tensor(new Array(32).fill(0)).to('i32'));
      await saveSafetensors(path, tensors);
    });
    await rejects(dir, 'hf_unsupported_dtype', ['"ln_f.bias"', 'I32', 'F32, F16, BF16']);
  });

  const unsupported: [string, string, (j: Record<string, unknown>) => void, string, unknown][] = [
    [
      'llama hidden_act gelu',
      LLAMA,
      (j) => {
        j.hidden_act = 'gelu';
      },
      'hidden_act',
      'gelu',
    ],
    [
      'an unknown rope_type',
      LLAMA,
      (j) => {
        j.rope_scaling = { rope_type: 'yarn', factor: 4 };
      },
      'rope_scaling.rope_type',
      'yarn',
    ],
    [
      'dynamic rope scaling (old "type" key)',
      LLAMA,
      (j) => {
        j.rope_scaling = { type: 'dynamic', factor: 2 };
      },
      'rope_scaling.rope_type',
      'dynamic',
    ],
    [
      'a sliding window shorter than the context',
      MISTRAL,
      (j) => {
        j.sliding_window = 16;
      },
      'sliding_window',
      16,
    ],
    [
      'attention_bias on Llama',
      LLAMA,
      (j) => {
        j.attention_bias = true;
      },
      'attention_bias',
      true,
    ],
    [
      'mlp_bias on Llama',
      LLAMA,
      (j) => {
        j.mlp_bias = true;
      },
      'mlp_bias',
      true,
    ],
    [
      'head_dim ≠ hidden/heads',
      LLAMA,
      (j) => {
        j.head_dim = 16;
      },
      'head_dim',
      16,
    ],
    [
      'GPT-2 scale_attn_by_inverse_layer_idx',
      GPT2,
      (j) => {
        j.scale_attn_by_inverse_layer_idx = true;
      },
      'scale_attn_by_inverse_layer_idx',
      true,
    ],
    [
      'GPT-2 reorder_and_upcast_attn',
      GPT2,
      (j) => {
        j.reorder_and_upcast_attn = true;
      },
      'reorder_and_upcast_attn',
      true,
    ],
    [
      'GPT-2 activation relu',
      GPT2,
      (j) => {
        j.activation_function = 'relu';
      },
      'activation_function',
      'relu',
    ],
    [
      'GPT-2 untied head',
      GPT2,
      (j) => {
        j.tie_word_embeddings = false;
      },
      'tie_word_embeddings',
      false,
    ],
    [
      'an architecture knobs lacks',
      GPT2,
      (j) => {
        j.model_type = 'bert';
      },
      'model_type',
      'bert',
    ],
  ];
  for (const [what, base, change, field, value] of unsupported) {
    it(`unsupported config: ${what}`, async () => {
      await rejects(
        await variant(base, editConfig(change)),
        'hf_unsupported_config',
        ['config.json', field, JSON.stringify(value)],
        { field, value },
      );
    });
  }

  it('ill-typed config values name the field and what was expected', async () => {
    await rejects(
      await variant(
        GPT2,
        editConfig((j) => {
          j.n_layer = '2';
        }),
      ),
      'hf_invalid_config',
      ['config.json', 'n_layer', 'an integer'],
      { field: 'n_layer' },
    );
    await rejects(
      await variant(
        LLAMA,
        editConfig((j) => {
          j.eos_token_id = [2, 640];
        }),
      ),
      'hf_invalid_config',
      ['eos_token_id', '[0, 64)'],
      { field: 'eos_token_id' },
    );
    await rejects(
      await variant(
        LLAMA,
        editConfig((j) => {
          j.num_key_value_heads = 3;
        }),
      ),
      'hf_invalid_config',
      ['num_key_value_heads', 'divisor'],
      { field: 'num_key_value_heads' },
    );
  });

  it('informational fields are ignored', async () => {
    const dir = await variant(
      GPT2,
      editConfig((j) => {
        Object.assign(j, {
          torch_dtype: 'bfloat16',
          transformers_version: '9.9.9',
          use_cache: false,
          _name_or_path: 'x',
          task_specific_params: { a: 1 },
          resid_pdrop: 0.5,
        });
      }),
    );
    const loaded = await loadHfModel(dir);
    assert.equal(loaded.kind, 'gpt2');
    assert.equal(loaded.model.training, false);
  });
});
