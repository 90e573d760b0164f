#!/usr/bin/env -S node --single-threaded-gc
/**
 * The `knobs` executable: runs the command line on this process's arguments and streams.
 *
 * Why `--single-threaded-gc`: every step frees hundreds of MB of tensor buffers, and V8 answers that
 * "external memory pressure" with a major GC every ~64 MB, marked and swept by background threads.
 * On a machine whose cores all run knobs' compute pool those threads preempt the kernels and evict
 * their caches: the kjv-gpt step ran ~14 % faster on one core and ~20 % on two with the GC on the
 * main thread (docs/performance.md). The flag can only be given at startup (V8 aborts when it is set
 * at run time), hence the shebang; `knobs info` says which mode a process runs in.
 */
import { main, processIO } from './main.js';

main(process.argv.slice(2), processIO()).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`knobs: internal error: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
