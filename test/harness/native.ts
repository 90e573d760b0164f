/**
 * The native backend for a test file that runs on it: registered when the addon is built, `skip`
 * (node:test's skip option) saying why not otherwise — and with KNOBS_REQUIRE_NATIVE=1 (CI) a
 * missing addon fails the file at import instead of skipping it.
 */
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../../src/backends/native/index.js';
import * as k from '../../src/index.js';

export const native = loadNativeBackend();
export const addon = native ? loadNativeAddon() : null;
export const skip: string | false = native ? false : `native backend not built: ${nativeLoadError()}`;
if (!native && process.env.KNOBS_REQUIRE_NATIVE === '1')
  throw new Error(`KNOBS_REQUIRE_NATIVE=1 but ${nativeLoadError()}`);
if (native && !k.backends().includes('native')) k.registerBackend(native);
