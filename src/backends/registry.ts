/**
 * Which backends this process has, and which one is the default: native when its addon loads,
 * js otherwise. Environment:
 *   KNOBS_BACKEND=js|native   picks the default explicitly (native missing → BackendError)
 *   KNOBS_REQUIRE_NATIVE=1    a missing addon is an error, not a fallback (CI sets it)
 * When native is missing and neither is set, knobs runs on js and says once, on stderr, how to
 * get the fast path.
 */
import { BackendError } from '../errors.js';
import type { Backend } from './backend.js';
import { jsBackend } from './js/index.js';
import { loadNativeBackend, nativeLoadError } from './native/index.js';

export interface BackendSetup {
  available: Backend[];
  preferred: Backend;
}

export function discoverBackends(env: NodeJS.ProcessEnv = process.env): BackendSetup {
  const wanted = env.KNOBS_BACKEND;
  if (wanted !== undefined && wanted !== 'js' && wanted !== 'native') {
    throw new BackendError(`KNOBS_BACKEND='${wanted}' is not a backend; use js or native`);
  }
  const requireNative = env.KNOBS_REQUIRE_NATIVE === '1' || wanted === 'native';
  const native = wanted === 'js' && !requireNative ? null : loadNativeBackend();
  if (!native) {
    const why = nativeLoadError();
    if (requireNative) {
      throw new BackendError(
        `the native backend is required (${wanted === 'native' ? 'KNOBS_BACKEND=native' : 'KNOBS_REQUIRE_NATIVE=1'}) but unavailable: ${why ?? 'not built'}; ` +
          'install g++ and libdnnl-dev (or libopenblas-dev), then run `npm rebuild knobs` or `node scripts/build-native.mjs`',
      );
    }
    if (wanted !== 'js') {
      process.stderr.write(
        `knobs: running on the js reference backend (slow): ${why ?? 'native addon not built'}. ` +
          'For the fast path install g++ and libdnnl-dev (or libopenblas-dev) and run `node scripts/build-native.mjs`.\n',
      );
    }
    return { available: [jsBackend], preferred: jsBackend };
  }
  return { available: [jsBackend, native], preferred: wanted === 'js' ? jsBackend : native };
}
