// llamacpp_tokenize.mjs — llama.cpp's token ids for a list of texts, through node-llama-cpp's prebuilt libllama.
//
// The peer side of tests/test_tokenizer_train.py: it needs node and the npm package only. The model is loaded
// vocabulary-only (llama.cpp still wants a full model file's metadata: make one with `msrnn init-model`).
// Each text is tokenized as llama.cpp's llama_tokenize(add_special = false, parse_special = false) does: the
// leading space prefix, no BOS, special-token text taken literally. Prints one JSON object:
//   {"llama_cpp": "<release>", "ids": [[...], ...]}   one id list per text, in order
//
// With --special 1, parse_special = true: the text of a control, user-defined or unknown token is that token.
// usage: node tests/llamacpp_tokenize.mjs --pkg DIR/node_modules/node-llama-cpp --model FILE --texts FILE.json
//        [--special 1]
//        (FILE.json: a JSON array of strings)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function parseArgs(argv) {
    const args = {};
    for (let i = 0; i < argv.length; i += 2) {
        if (i + 1 >= argv.length) throw new Error(`llamacpp_tokenize: ${argv[i]} needs a value`);
        args[argv[i].replace(/^--/, "")] = argv[i + 1];
    }
    for (const k of ["pkg", "model", "texts"])
        if (!args[k]) throw new Error(`llamacpp_tokenize: --${k} is required`);
    return args;
}

const args = parseArgs(process.argv.slice(2));
const nlc = await import(pathToFileURL(join(args.pkg, "dist", "index.js")).href);
const llamaInfo = JSON.parse(readFileSync(join(args.pkg, "llama", "binariesGithubRelease.json"), "utf8"));
const texts = JSON.parse(readFileSync(args.texts, "utf8"));

// build "never": use the prebuilt binaries from @node-llama-cpp/linux-x64, fail rather than compile.
const llama = await nlc.getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: nlc.LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0, vocabOnly: true });
// --special 1: llama_tokenize(add_special = false, parse_special = true)
const special = args.special === "1";
const ids = texts.map((t) => Array.from(model.tokenize(t, special)));
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify({ llama_cpp: llamaInfo.release, ids }) + "\n");
