// Drives the web chat in headless Chromium (Debian's, through playwright-core installed by
// scripts/fetch-testdata) against a live forja server, the way a user would. Prints one JSON
// object of what it saw; any failed expectation throws (exit code 1).
//
//   node chat_ui.mjs chat URL MODEL PROMPT EXPECTED_JSON SCREENSHOT
//   node chat_ui.mjs auth URL MODEL KEY
//   node chat_ui.mjs documents URL MODEL DOCX_FILE
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(`${process.env.FORJA_BROWSER_MODULES}/`);
const { chromium } = require("playwright-core");

const [mode, url, model, ...rest] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const seen = {};
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  await page.goto(url);

  const stored = () => page.evaluate(() => JSON.parse(localStorage.getItem("forja.conversations")));
  const setField = async (id, value) => {
    await page.fill(`#${id}`, String(value));
    await page.dispatchEvent(`#${id}`, "change");
  };
  const ask = async (text) => {
    await page.fill("#prompt", text);
    await page.press("#prompt", "Enter");
  };

  if (mode === "chat") {
    const [prompt, expectedJson, screenshot] = rest;
    const expected = JSON.parse(expectedJson);
    await page.waitForSelector("#model[data-loaded=true]");
    const options = await page.$$eval("#model option", (os) => os.map((o) => o.value));
    assert.deepEqual(options, [model], "the chat offers chat models only");

    // A seeded, greedy answer must be exactly what the API gives for the same request.
    await page.click("#settings-toggle");
    await setField("temperature", 0);
    await setField("max-tokens", expected.max_tokens);
    await setField("seed", 1);
    await ask(prompt);
    await page.waitForSelector(".message.assistant[data-state=done]", { timeout: 120000 });
    let convs = await stored();
    assert.equal(convs.length, 1);
    assert.equal(convs[0].title, prompt);
    assert.equal(convs[0].messages[0].content, prompt);
    assert.equal(convs[0].messages[1].content, expected.content);
    assert.equal(convs[0].messages[1].stats.tokens, expected.completion_tokens);
    seen.first_answer = convs[0].messages[1].content;
    seen.rendered = await page.textContent(".message.assistant .content");
    seen.meta = await page.textContent(".message.assistant .meta");
    assert.match(seen.meta, new RegExp(`^${expected.completion_tokens} tokens`));
    assert.equal(await page.inputValue("#prompt"), "", "the composer is cleared");

    // Stop: a long answer cut off by the user is kept and marked stopped.
    await setField("max-tokens", 400);
    await ask("Write a long story about a dragon who learns to bake bread.");
    await page.waitForFunction(() => {
      const m = document.querySelectorAll(".message.assistant");
      return m.length === 2 && m[1].textContent.length > 20;
    }, null, { timeout: 120000 });
    await page.click("#stop");
    await page.waitForSelector(".message.assistant[data-state=stopped]", { timeout: 30000 });
    convs = await stored();
    const stopped = convs[0].messages[3];
    assert.equal(stopped.state, "stopped");
    assert.ok(stopped.content.length > 0, "the partial answer is kept");
    seen.stopped_chars = stopped.content.length;

    // Regenerate replaces the stopped answer with a new one.
    await setField("max-tokens", 8);
    await page.click("#regenerate");
    await page.waitForFunction(() => {
      const m = document.querySelectorAll(".message.assistant");
      return m.length === 2 && m[1].dataset.state === "done";
    }, null, { timeout: 120000 });
    convs = await stored();
    assert.equal(convs[0].messages.length, 4);
    assert.equal(convs[0].messages[3].state, "done");
    assert.ok(convs[0].messages[3].stats.tokens <= 8);

    // Reload: the conversation and settings come back from localStorage.
    await page.reload();
    await page.waitForSelector("#model[data-loaded=true]");
    assert.equal(await page.$$eval("#conversations li", (l) => l.length), 1);
    assert.equal(await page.$$eval(".message", (m) => m.length), 4);
    assert.equal(await page.inputValue("#temperature"), "0");
    assert.equal(await page.isHidden("#settings"), true, "settings start closed");
    assert.equal(await page.textContent(".message.assistant .content"), seen.rendered);
    await page.screenshot({ path: screenshot, fullPage: true });

    // Model output is rendered as Markdown built from text nodes: markup in it stays text.
    await page.evaluate(() => {
      const evil = "**bold** and `code`\n\n<img src=x onerror=\"window.pwned=1\">\n\n```js\nlet a = '<b>';\n```\n\n- one\n- two";
      const conv = { id: "x", title: "markdown", messages: [
        { role: "user", content: "<script>window.pwned=2</script>" },
        { role: "assistant", content: evil, state: "done" },
      ] };
      localStorage.setItem("forja.conversations", JSON.stringify([conv]));
      localStorage.setItem("forja.current", JSON.stringify("x"));
    });
    await page.reload();
    await page.waitForSelector(".message.assistant");
    const md = await page.evaluate(() => {
      const a = document.querySelector(".message.assistant .content");
      return {
        pwned: window.pwned ?? null,
        imgs: document.querySelectorAll(".message img, .message script").length,
        strong: a.querySelector("strong")?.textContent,
        code: a.querySelector("p code")?.textContent,
        pre: a.querySelector("pre code")?.textContent,
        lang: a.querySelector("pre code")?.dataset.lang,
        items: [...a.querySelectorAll("ul li")].map((li) => li.textContent),
        text: a.textContent,
        user: document.querySelector(".message.user").textContent,
      };
    });
    assert.equal(md.pwned, null);
    assert.equal(md.imgs, 0);
    assert.equal(md.strong, "bold");
    assert.equal(md.code, "code");
    assert.equal(md.pre, "let a = '<b>';\n");
    assert.equal(md.lang, "js");
    assert.deepEqual(md.items, ["one", "two"]);
    assert.ok(md.text.includes('<img src=x onerror="window.pwned=1">'));
    assert.equal(md.user, "<script>window.pwned=2</script>");

    // Deleting the conversation empties the list and the thread.
    await page.click("#conversations li button.delete");
    assert.equal(await page.$$eval("#conversations li", (l) => l.length), 0);
    assert.equal(await page.$$eval(".message", (m) => m.length), 0);
  } else if (mode === "auth") {
    const [key] = rest;
    // Without the key the page says what is wrong and where to fix it.
    await page.waitForSelector("#notice:not([hidden])");
    seen.without_key = await page.textContent("#notice");
    assert.match(seen.without_key, /API key/);
    await page.click("#settings-toggle");
    await setField("api-key", key);
    await page.waitForSelector("#model[data-loaded=true]");
    assert.equal(await page.isHidden("#notice"), true, "the notice goes once the key works");
    await setField("max-tokens", 4);
    await ask("Hello");
    await page.waitForSelector(".message.assistant[data-state=done]", { timeout: 120000 });
    const convs = await stored();
    assert.ok(convs[0].messages[1].content.length > 0);
    seen.answer = convs[0].messages[1].content;
    // A wrong key: the reply shows the server's error instead of an answer.
    await setField("api-key", `${key}-wrong`);
    await ask("Hello again");
    await page.waitForSelector(".message.error", { timeout: 30000 });
    seen.error = await page.textContent(".message.error");
    assert.match(seen.error, /API key/);
  } else if (mode === "documents") {
    const [docx] = rest;
    await page.waitForSelector("#model[data-loaded=true]");
    await page.click("#documents-toggle");
    await page.waitForSelector("#collection[data-loaded=true]");
    assert.equal(await page.$$eval("#collection option", (o) => o.length), 0);
    await page.fill("#new-collection", "handbook");
    await page.click("#create-collection button[type=submit]");
    await page.waitForSelector("#collection option[value=handbook]", { state: "attached" });
    assert.equal(await page.inputValue("#collection"), "handbook");

    // A real Word file, a text file whose words look like markup, and a broken file.
    const markup = 'Travel must be booked two weeks ahead.\n<img src=x onerror="window.pwned=3">';
    const { readFileSync } = await import("node:fs");
    await page.setInputFiles("#files", [
      { name: "memo.docx", mimeType: "application/octet-stream", buffer: readFileSync(docx) },
      { name: "travel.txt", mimeType: "text/plain", buffer: Buffer.from(markup) },
      { name: "broken.docx", mimeType: "application/octet-stream", buffer: Buffer.from("junk") },
    ]);
    await page.click("#upload");
    await page.waitForSelector("#upload-results[data-state=done]", { timeout: 120000 });
    seen.results = await page.$$eval("#upload-results li", (l) =>
      l.map((li) => ({ text: li.textContent, failed: li.classList.contains("failed") })));
    assert.equal(seen.results.length, 3, JSON.stringify(seen.results));
    assert.match(seen.results[0].text, /^memo\.docx: added \(\d+ chunks\)$/);
    assert.match(seen.results[1].text, /^travel\.txt: added \(\d+ chunks\)$/);
    assert.match(seen.results[2].text, /^broken\.docx: failed — not a readable DOCX file/);
    assert.deepEqual(seen.results.map((r) => r.failed), [false, false, true]);
    assert.match(await page.textContent("#collection-info"), /^2 documents · /);

    // Asking with documents on: the answer shows its sources under it, as text.
    await page.check("#use-documents");
    await page.click("#settings-toggle");
    await setField("temperature", 0);
    await setField("max-tokens", 16);
    await ask("How far ahead must travel be booked?");
    await page.waitForSelector(".message.assistant[data-state=done]", { timeout: 120000 });
    const cited = await page.evaluate(() => {
      const a = document.querySelector(".message.assistant");
      return {
        labels: [...a.querySelectorAll(".citations li .label")].map((l) => l.textContent),
        excerpts: [...a.querySelectorAll(".citations li .excerpt")].map((l) => l.textContent),
        numbers: [...a.querySelectorAll(".citations li")].map((l) => l.value),
        imgs: document.querySelectorAll(".message img").length,
        pwned: window.pwned ?? null,
      };
    });
    seen.citations = cited.labels;
    assert.ok(cited.labels.some((l) => l.startsWith("memo.docx")), JSON.stringify(cited));
    const i = cited.labels.findIndex((l) => l.startsWith("travel.txt"));
    assert.ok(i >= 0, JSON.stringify(cited));
    assert.equal(cited.excerpts[i], markup, "document text stays text");
    assert.deepEqual(cited.numbers, cited.labels.map((_, n) => n + 1));
    assert.equal(cited.imgs, 0);
    assert.equal(cited.pwned, null);
    const convs = await stored();
    assert.equal(convs[0].messages[1].citations.length, cited.labels.length);

    // Off again: a plain answer without sources.
    await page.uncheck("#use-documents");
    await ask("Hello");
    await page.waitForFunction(() => {
      const m = document.querySelectorAll(".message.assistant");
      return m.length === 2 && m[1].dataset.state === "done";
    }, null, { timeout: 120000 });
    assert.equal(await page.$$eval(".message.assistant:nth-of-type(4) .citations", (c) => c.length), 0);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  // 401s from the auth check show up as failed resource loads in the console; anything else is a bug.
  seen.problems = problems.filter((p) => !(mode === "auth" && p.includes("401")));
  assert.deepEqual(seen.problems, []);
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
