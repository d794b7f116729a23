// The demo's function tool: declared in the setup, answered in the page with canned data.
// A real app would call its own backend here and send the result back as a tool_response.

export const TOOLS = [
  {
    function_declarations: [
      {
        name: "get_weather",
        description: "Get the current weather for a city.",
        parameters: {
          type: "object",
          properties: { location: { type: "string", description: "City name, e.g. Tokyo" } },
          required: ["location"],
        },
      },
    ],
  },
];

/** The `response` object for one function call from the model. */
export function answerToolCall({ name, args = {} }) {
  if (name === "get_weather") {
    return { location: String(args.location ?? "unknown"), forecast: "sunny", temperature_c: 21, canned: true };
  }
  return { error: `This page has no function named ${name}.` };
}
