// A complete training loop with the library (no recipe): an MLP on Fashion-MNIST, AdamW with
// warm-up and cosine decay, gradient clipping, then accuracy on the test split.
// Run: node examples/train-loop.mjs [STEPS]   (needs Debian's dataset-fashion-mnist package)
import * as k from '../dist/src/index.js';

const steps = Number(process.argv[2] ?? 300);
const train = await k.loadFashionMnist('train');
const test = await k.loadFashionMnist('test');
const loader = new k.ImageLoader(train, {
  batchSize: 64,
  seed: 1,
  dropLast: true,
  normalize: k.FASHION_MNIST_NORMALIZE,
});

const model = new k.MLPClassifier({ input: 784, hidden: [128], classes: 10 }, { seed: 0 });
const optimizer = new k.AdamW(model, { lr: 2e-3, weightDecay: 0.01 }); // no decay on biases
const schedule = k.cosineSchedule({ maxLr: 2e-3, minLr: 2e-4, warmupSteps: 20, totalSteps: steps });

for (let step = 0; step < steps; step++) {
  const { inputs, labels } = loader.next(); // f32 [64, 784], i32 [64]
  optimizer.setLr(schedule(step));
  optimizer.zeroGrad();
  const loss = k.crossEntropy(model.forward(inputs), labels);
  loss.backward();
  k.clipGradNorm(model, 1.0);
  optimizer.step();
  if ((step + 1) % 100 === 0) console.log(`step ${step + 1} loss ${loss.item().toFixed(3)}`);
}

const { accuracy, loss } = await k.evaluateClassifier(model, test, { batchSize: 500, layout: 'flat' });
console.log(`test accuracy ${(100 * accuracy).toFixed(1)}% loss ${loss.toFixed(3)}`);
