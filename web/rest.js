// The page's REST calls (docs/PROTOCOL.md, REST): JSON in and out, and on a refusal the
// server's own sentence, so every panel says the same thing the same way.

/**
 * Call `path`; resolves to the JSON answer, or to null after `onError(message)` got the
 * server's reason (or why there was no answer).
 */
export async function callApi(path, options, onError) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { Accept: "application/json", ...(options?.headers ?? {}) } });
  } catch {
    onError("The server did not answer. Check the connection and try again.");
    return null;
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    onError(body?.error?.message || `The server refused that (HTTP ${response.status}).`);
    return null;
  }
  return body;
}
