#!/usr/bin/env node
/** The `knobs` executable: runs the command line on this process's arguments and streams. */
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
