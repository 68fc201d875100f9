// llamacpp_greedy.mjs — greedy continuations from llama.cpp, through node-llama-cpp's prebuilt libllama.
//
// The peer side of tests/test_slow_llamacpp_greedy.py: it needs node and the npm package only, no native
// llama.cpp build. Settings match msrnn's: CPU only, f32 K and V cache, flash attention off, temperature 0
// (arg-max), no repetition penalty, the prompt evaluated from an empty cache. Prints one JSON object:
//   {"llama_cpp": "<release>", "results": [{"text_ids": [...]?, "prompt_ids": [...], "ids": [...],
//                                           "margins": [...]}, ...]}
// Each prompt is {"text": ..., "ids": [...]} (either or both): text_ids is llama.cpp's own tokenisation of
// the text (BOS first), for comparing tokenizers; generation starts from ids when given, else from text_ids.
// margins[i] is the gap between the best and second-best logit at step i, ln(p1 / p2).
//
// usage: node tests/llamacpp_greedy.mjs --pkg DIR/node_modules/node-llama-cpp --model FILE --n 64
//             [--threads 2] --prompts '[{"text": "Once upon", "ids": [1, 9038, 2501]}, ...]'
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function parseArgs(argv) {
    const args = { threads: 2, n: 64 };
    for (let i = 0; i < argv.length; i += 2) {
        const key = argv[i].replace(/^--/, "");
        if (i + 1 >= argv.length) throw new Error(`llamacpp_greedy: ${argv[i]} needs a value`);
        args[key] = argv[i + 1];
    }
    for (const k of ["pkg", "model"])
        if (!args[k]) throw new Error(`llamacpp_greedy: --${k} is required`);
    if (!args.prompts) throw new Error("llamacpp_greedy: --prompts is required");
    return args;
}

const args = parseArgs(process.argv.slice(2));
const nlc = await import(pathToFileURL(join(args.pkg, "dist", "index.js")).href);
const llamaInfo = JSON.parse(readFileSync(join(args.pkg, "llama", "binariesGithubRelease.json"), "utf8"));

// build "never": use the prebuilt binaries from @node-llama-cpp/linux-x64, fail rather than compile.
const llama = await nlc.getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: nlc.LlamaLogLevel.error, maxThreads: Number(args.threads),
});
const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0, useMmap: true });
const n = Number(args.n);
const prompts = JSON.parse(args.prompts);

const results = [];
for (const p of prompts) {
    const entry = {};
    // tokenize() adds no BOS; llama.cpp (and msrnn) put it first for this tokenizer.
    if (p.text !== undefined) entry.text_ids = [model.tokens.bos, ...model.tokenize(p.text, false)];
    const promptIds = p.ids ?? entry.text_ids;
    // One context per prompt, so each starts from an empty KV cache at position 0.
    const context = await model.createContext({
        contextSize: promptIds.length + n,
        batchSize: Math.max(512, promptIds.length),
        sequences: 1,
        flashAttention: false,
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
        threads: { ideal: Number(args.threads), min: Number(args.threads) },
    });
    const seq = context.getSequence();
    const ids = [], margins = [];
    for await (const out of seq.evaluateWithMetadata(promptIds, { probabilities: true }, { temperature: 0 })) {
        const [p1, p2] = [...out.probabilities.values()].sort((a, b) => b - a);
        ids.push(out.token);
        margins.push(p2 > 0 ? Math.log(p1 / p2) : Infinity);
        if (ids.length >= n) break;
    }
    entry.prompt_ids = promptIds;
    entry.ids = ids;
    entry.margins = margins;
    results.push(entry);
    await context.dispose();
}
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify({ llama_cpp: llamaInfo.release, results }) + "\n");
