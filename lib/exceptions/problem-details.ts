/** The IETF RateLimit draft's problem type for a request over quota. */
export const QUOTA_EXCEEDED_TYPE = 'https://iana.org/assignments/http-problem-types#quota-exceeded';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

/** Asks a refusal for an RFC 9457 body; `violatedPolicies` are the policy names that denied it. */
export interface ProblemDetailsRequest {
  readonly violatedPolicies: readonly string[];
}
