// PLACEHOLDER until branch i12-js lands the real client: not the final file.
export const version = "0";
export function client() { throw new Error("placeholder xio.js"); }
