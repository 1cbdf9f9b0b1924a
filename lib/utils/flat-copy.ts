/**
 * A flat copy of a string. A concatenation is a tree of pieces and a slice keeps its whole parent
 * alive, so a string kept for long (a cache key, a stored key) is copied first: it then costs its
 * own length and nothing else. A JSON round trip copies any string, lone surrogates included.
 */
export function flatCopy(value: string): string {
  return JSON.parse(JSON.stringify(value)) as string;
}
