// What genai.mjs exports: the browser build of Google's JS SDK, whole.
export * from "@google/genai/web";
