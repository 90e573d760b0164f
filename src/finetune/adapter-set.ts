/**
 * Several LoRA adapters on one base, chosen per call. Each adapter is loaded onto the base once
 * and detached again (LoraLayer.detach), so the base's weights are never touched; `use(name, fn)`
 * attaches that adapter alone for the length of `fn`. Calls are queued, one at a time, so two
 * requests for different adapters (a server) can never see each other's delta.
 */
import { ArgumentError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { type LoadAdapterOptions, loadLoraAdapter } from './adapter.js';
import type { LoraAdapter } from './lora.js';

export class AdapterSet {
  readonly model: Module;
  readonly #adapters = new Map<string, LoraAdapter>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(model: Module) {
    this.model = model;
  }

  /** Reads the PEFT adapter directory `dir` under `name` (checks as loadLoraAdapter: digest, tensors, shapes). */
  async load(name: string, dir: string, opts: LoadAdapterOptions = {}): Promise<LoraAdapter> {
    if (this.#adapters.has(name))
      throw new ArgumentError(`AdapterSet: an adapter named ${JSON.stringify(name)} is already loaded`);
    // Loading attaches; wait for calls in flight so none of them sees the new delta.
    return this.#serial(async () => {
      const { adapter } = await loadLoraAdapter(dir, this.model, opts);
      adapter.detach();
      this.#adapters.set(name, adapter);
      return adapter;
    });
  }

  get names(): string[] {
    return [...this.#adapters.keys()];
  }

  get(name: string): LoraAdapter {
    const a = this.#adapters.get(name);
    if (!a)
      throw new ArgumentError(
        `AdapterSet: no adapter named ${JSON.stringify(name)}; loaded: ${this.names.map((n) => JSON.stringify(n)).join(', ') || 'none'}`,
      );
    return a;
  }

  /** Runs `fn` with only adapter `name` attached (null: the base alone), after every earlier call has finished. */
  use<T>(name: string | null, fn: () => T | Promise<T>): Promise<T> {
    const adapter = name === null ? null : this.get(name);
    return this.#serial(async () => {
      adapter?.attach();
      try {
        return await fn();
      } finally {
        adapter?.detach();
      }
    });
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
