// The official openai Node client streaming a chat from `anabranch serve`:
//   node stream_chat.cjs BASE_URL TOKEN MODEL PROMPT
// prints one JSON line: the streamed text, the finish reason, the chunks, the usage.
const OpenAI = require("openai");

async function main() {
  const [baseURL, apiKey, model, prompt] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: prompt }],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: 200,
  });
  let text = "";
  let finish = null;
  let chunks = 0;
  let usage = null;
  for await (const chunk of stream) {
    chunks += 1;
    usage = chunk.usage || usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content || "";
      finish = choice.finish_reason || finish;
    }
  }
  console.log(JSON.stringify({ text, finish, chunks, usage }));
}

main().catch((error) => {
  console.error(String(error));
  process.exit(1);
});
