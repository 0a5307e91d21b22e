// Parse every Adaptive Card given on stdin (a JSON list of Teams Workflows payloads) with Microsoft's official
// Adaptive Cards parser, and report every parse or validation event. Exit status 1 when there is any.
// Used by host/cli/tests/it/webhooks.rs; the npm package is pinned in package.json / package-lock.json.
"use strict";
// The "main" entry of adaptivecards 3.0.6 is ES modules without file extensions, which Node cannot load; the UMD
// bundle in dist/ is the same parser, and parsing needs no DOM.
const AC = require("adaptivecards/dist/adaptivecards.js");

const input = require("fs").readFileSync(0, "utf8");
const payloads = JSON.parse(input);
const problems = [];
let cards = 0;
for (const [i, payload] of payloads.entries()) {
    for (const attachment of payload.attachments || []) {
        cards += 1;
        const card = new AC.AdaptiveCard();
        const context = new AC.SerializationContext();
        card.parse(attachment.content, context);
        for (let e = 0; e < context.eventCount; e++) {
            problems.push({ payload: i, phase: "parse", message: context.getEventAt(e).message });
        }
        for (const event of card.validateProperties().validationEvents) {
            problems.push({ payload: i, phase: "validate", message: event.message });
        }
        if (card.version.toString() !== "1.4") {
            problems.push({ payload: i, phase: "version", message: `version ${card.version}` });
        }
        if (card.getItemCount() !== attachment.content.body.length) {
            problems.push({ payload: i, phase: "body", message: `${card.getItemCount()} elements parsed of ${attachment.content.body.length}` });
        }
    }
}
console.log(JSON.stringify({ cards, problems }));
process.exit(problems.length === 0 && cards > 0 ? 0 : 1);
