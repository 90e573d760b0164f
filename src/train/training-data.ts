/**
 * RUN/training-data.json: which bytes a run trained on — the SHA-256 and size of every data file,
 * hashed by streaming (constant memory, any size) before training starts:
 *
 *   {"format": "knobs-training-data", "version": 1,
 *    "files": [{"field": "data.path", "path": "/abs/kjv.txt", "size": 4351888, "sha256": "hex"}, …]}
 *
 * `field` is the recipe field that named the file. A resumed run hashes its data again: a file
 * whose bytes differ from the recorded ones is a warning (the run is then not reproducible from
 * one data set), and the new version is added to the list, so the record holds every version the
 * run trained on, oldest first.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../io/atomic.js';
import { parseJsonFile } from '../io/json.js';
import { hashRegularFile, readRegularText } from '../io/regular-file.js';
import type { Recipe } from './recipe.js';

export const TRAINING_DATA_NAME = 'training-data.json';
const FORMAT = 'knobs-training-data';
/** A record lists a few files per session; a larger one is not ours. */
const MAX_RECORD_BYTES = 16 * 1024 * 1024;

const fileSchema = z.strictObject({
  field: z.string(),
  path: z.string(),
  size: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
const recordSchema = z.strictObject({ format: z.literal(FORMAT), version: z.literal(1), files: z.array(fileSchema) });

export type TrainingDataFile = z.output<typeof fileSchema>;
export type TrainingDataRecord = z.output<typeof recordSchema>;

/** The data files a recipe's data section names (paths already absolute), with their fields. */
export function dataFilesOf(data: Recipe['data']): Array<{ field: string; path: string }> {
  if (data.type === 'text') return [{ field: 'data.path', path: data.path }];
  return (['train_images', 'train_labels', 'test_images', 'test_labels'] as const).map((f) => ({
    field: `data.${f}`,
    path: data[f],
  }));
}

/** Hashes every data file of the recipe. */
export async function hashTrainingData(data: Recipe['data']): Promise<TrainingDataFile[]> {
  const out: TrainingDataFile[] = [];
  for (const { field, path } of dataFilesOf(data))
    out.push({ field, path, ...(await hashRegularFile(path, 'data file')) });
  return out;
}

/** The record in `runDir`, or null when there is none or it is not one (a run from before records existed). */
async function readRecord(runDir: string): Promise<TrainingDataRecord | null> {
  try {
    const path = join(runDir, TRAINING_DATA_NAME);
    const parsed = recordSchema.safeParse(
      parseJsonFile(await readRegularText(path, MAX_RECORD_BYTES), path, 'not_json'),
    );
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * Writes (atomically) the record of `runDir` with `files` added to what it already lists; returns
 * a warning for each file whose bytes differ from the last version recorded for its field.
 */
export async function recordTrainingData(runDir: string, files: readonly TrainingDataFile[]): Promise<string[]> {
  const previous = (await readRecord(runDir))?.files ?? [];
  const warnings: string[] = [];
  const listed = [...previous];
  for (const file of files) {
    const last = previous.filter((p) => p.field === file.field).at(-1);
    if (last && (last.sha256 !== file.sha256 || last.size !== file.size)) {
      warnings.push(
        `${file.field} ${file.path} (${file.size} bytes, SHA-256 ${file.sha256.slice(0, 16)}…) is not the data this run trained on so far (${last.path}, ${last.size} bytes, SHA-256 ${last.sha256.slice(0, 16)}…); both are recorded in ${TRAINING_DATA_NAME}`,
      );
    }
    if (
      !listed.some(
        (p) => p.field === file.field && p.path === file.path && p.sha256 === file.sha256 && p.size === file.size,
      )
    )
      listed.push(file);
  }
  const record: TrainingDataRecord = { format: FORMAT, version: 1, files: listed };
  await writeFileAtomic(join(runDir, TRAINING_DATA_NAME), `${JSON.stringify(record, null, 2)}\n`);
  return warnings;
}
