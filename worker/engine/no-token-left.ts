// The request's own limits leave no token to draw: allowed_token_ids, bad_words or stop_token_ids against
// each other or against the output format it asked for. The caller's contradiction, told as such (the
// scheduler fails the request as invalid_request, a 400), not a model fault (a 502).
export class NoTokenLeftError extends Error {
  override readonly name = "NoTokenLeftError";
}
