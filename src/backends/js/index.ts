/**
 * The js reference backend: plain TypeScript loops, no Node-only APIs (it runs in browsers too).
 * Obviously correct first; every faster backend is tested against it.
 */
import type { Backend } from '../backend.js';
import {
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  maxPool2d,
  maxPool2dBackward,
  avgPool2d,
  avgPool2dBackward,
} from './conv.js';
import { assign, binary, cast, unary, where } from './elementwise.js';
import { gatherRows, matmul, scatterAddRows } from './matmul.js';
import { argReduce, cumsum, reduce } from './reduce.js';

export const jsBackend: Backend = {
  name: 'js',
  describe: () => ({ name: 'js', description: 'reference TypeScript kernels', threads: 1, dtypes: ['f32', 'f64'] }),
  supports: () => true,
  unary,
  binary,
  where,
  reduce,
  argReduce,
  cumsum,
  matmul,
  assign,
  cast,
  gatherRows,
  scatterAddRows,
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  maxPool2d,
  maxPool2dBackward,
  avgPool2d,
  avgPool2dBackward,
};
