// `python -m bench sharp`'s Node side (bench/sharp.py starts it). Line-delimited JSON on
// stdin and stdout: first a setup line (the photo's path, the output sets, the JPEG options of
// each sharp pipeline), answered with the versions; then one line per round to time, answered
// with its wall and CPU milliseconds. A round makes every output of one set from the photo's
// bytes, read once at setup; with `outdir`, its outputs are then written there (untimed).
// Rounds are asked for one at a time so that bench/sharp.py can interleave them with ours.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const sharp = require('sharp');

sharp.concurrency(1); // one libvips thread; UV_THREADPOOL_SIZE=1 comes from the caller
sharp.cache(false); // every round decodes afresh, as ours does

// Resize once per preset, then encode that one rendition in each format, as ours does; a
// sharp pipeline per output would decode the file once per format, which is slower.
async function render(input, preset) {
  let image = sharp(input, { autoOrient: true });
  if (preset.max_width !== null) {
    const fit = preset.crop ? 'cover' : 'inside';
    image = image.resize(preset.max_width, preset.max_height, { fit, withoutEnlargement: true });
  }
  const { data, info } = await image.raw().toBuffer({ resolveWithObject: true });
  return { data, raw: { width: info.width, height: info.height, channels: info.channels } };
}

// The formats the preset names (ours' default: WebP and JPEG), each with sharp's defaults
// otherwise: quality 80 (AVIF 50), WebP effort 4, metadata stripped, sRGB output.
async function makeSet(input, presets, jpegOptions) {
  const outputs = [];
  for (const preset of presets) {
    const { data, raw } = await render(input, preset);
    for (const format of preset.formats || ['webp', 'jpeg']) {
      const options = format === 'jpeg' ? jpegOptions : {};
      const body = await sharp(data, { raw }).toFormat(format, options).toBuffer();
      outputs.push({ preset: preset.name, format, body });
    }
  }
  return outputs;
}

async function round(setup, request) {
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const outputs = await makeSet(setup.input, setup.sets[request.set], setup.pipelines[request.pipeline]);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const used = process.cpuUsage(cpu);
  const files = [];
  if (request.outdir) {
    fs.mkdirSync(request.outdir, { recursive: true });
    for (const output of outputs) {
      const file = path.join(request.outdir, `${output.preset}.${output.format}`);
      fs.writeFileSync(file, output.body);
      files.push({ preset: output.preset, format: output.format, path: file });
    }
  }
  return { ms, cpu_ms: (used.user + used.system) / 1000, files };
}

async function main() {
  let setup = null;
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const message = JSON.parse(line);
    let answer;
    if (setup === null) {
      setup = { ...message, input: fs.readFileSync(message.input) };
      answer = { sharp: sharp.versions.sharp, vips: sharp.versions.vips };
    } else {
      answer = await round(setup, message);
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
