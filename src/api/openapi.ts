// The OpenAPI 3.1 description of the server API (src/api/routes.ts), served at /api/openapi.json.
// test/api.test.ts checks that it lists exactly the routes the app serves.
const error = { $ref: '#/components/responses/Error' };
const position = { offset: { type: 'integer', minimum: 1 }, epoch: { type: 'string' } };
const published = {
  type: 'object',
  required: ['topic', 'offset', 'epoch'],
  properties: {
    topic: { type: 'string' },
    ...position,
    delivered: { type: 'integer', description: "this node's local deliveries; absent with the Redis store, through which every node gets it" },
    duplicate: { type: 'boolean', description: 'true when the idempotencyKey was seen: the first result, not published again' },
  },
};
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const topicParam = { name: 'topic', in: 'query', required: true, schema: { type: 'string', minLength: 1, maxLength: 256 } };

export const openApiDocument = {
  openapi: '3.1.0',
  info: { title: 'hubbub server API', version: '1', description: 'Enabled by --api-key; on the admin listener with --admin-port, else the public one. Every route wants Authorization: Bearer <api key>.' },
  security: [{ apiKey: [] }],
  paths: {
    '/api/publish': {
      post: {
        summary: 'Publish to a topic (every node, every subscriber)',
        requestBody: json({ type: 'object', required: ['topic', 'data'], properties: { topic: { type: 'string' }, data: {}, idempotencyKey: { type: 'string', maxLength: 256, description: 'a key seen within 5 minutes is not published twice' } } }),
        responses: { 200: { description: 'published', ...json(published) }, 400: error, 401: error, 409: error, 413: error, 503: error },
      },
    },
    '/api/broadcast': {
      post: {
        summary: 'Publish the same data to several topics',
        requestBody: json({ type: 'object', required: ['topics', 'data'], properties: { topics: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 1000 }, data: {} } }),
        responses: { 200: { description: 'one result per topic, in order', ...json({ type: 'object', properties: { results: { type: 'array', items: {} } } }) }, 400: error, 401: error, 413: error },
      },
    },
    '/api/disconnect': {
      post: {
        summary: 'Close a connection, or every connection of a principal, on every node',
        requestBody: json({ type: 'object', properties: { id: { type: 'string' }, principal: { type: 'string' }, code: { type: 'integer', minimum: 4000, maximum: 4999, default: 4000 }, reason: { type: 'string' } } }),
        responses: { 200: { description: 'closed here (other nodes close theirs when the backplane delivers)', ...json({ type: 'object', properties: { closedHere: { type: 'integer' }, cluster: { type: 'boolean' } } }) }, 400: error, 401: error, 413: error },
      },
    },
    '/api/topics': {
      get: {
        summary: "This node's topics, the largest first",
        parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10000, default: 1000 } }],
        responses: { 200: { description: 'topics', ...json({ type: 'object', properties: { count: { type: 'integer' }, topics: { type: 'array', items: { type: 'object', properties: { topic: { type: 'string' }, subscribers: { type: 'integer' } } } } } }) }, 400: error, 401: error },
      },
    },
    '/api/presence': {
      get: {
        summary: "A topic's members (cluster-wide with Redis)",
        parameters: [topicParam],
        responses: { 200: { description: 'members', ...json({ type: 'object', properties: { topic: { type: 'string' }, count: { type: 'integer' }, members: { type: 'array', items: {} } } }) }, 400: error, 401: error, 503: error },
      },
    },
    '/api/history': {
      get: {
        summary: "A topic's position and kept publications",
        parameters: [topicParam, { name: 'since', in: 'query', schema: { type: 'integer', minimum: 0 } }, { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10000 } }],
        responses: { 200: { description: 'history', ...json({ type: 'object', properties: { topic: { type: 'string' }, ...position, publications: { type: 'array', items: { type: 'object', properties: { offset: { type: 'integer' }, data: {} } } } } }) }, 400: error, 401: error, 503: error },
      },
    },
    '/api/info': {
      get: {
        summary: 'Version, runtime, counts, backplane',
        responses: { 200: { description: 'info', ...json({ type: 'object', properties: { version: { type: 'string' }, runtime: { type: 'string' }, live: { type: 'integer' }, limit: { type: 'integer' }, topics: { type: 'integer' } } }) }, 401: error },
      },
    },
    '/api/openapi.json': { get: { summary: 'This document', responses: { 200: { description: 'OpenAPI 3.1' }, 401: error } } },
  },
  components: {
    securitySchemes: { apiKey: { type: 'http', scheme: 'bearer' } },
    responses: {
      Error: {
        description: 'an error',
        ...json({ type: 'object', required: ['error'], properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { enum: ['unauthorized', 'bad-request', 'too-large', 'not-found', 'in-progress', 'unavailable'] }, message: { type: 'string' } } } } }),
      },
    },
  },
} as const;
