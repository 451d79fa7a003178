import {
  create,
  type DescMessage,
  type DescMethodStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";

type HeaderInit = ConstructorParameters<typeof Headers>[0];

/** The transport, plus a call with bytes the caller encoded itself. */
export interface GrpcJsTransport extends Transport {
  /**
   * A unary call whose request is already encoded (for the hot Report path, see
   * outcome-encoding.ts); resolves with the encoded response.
   */
  unaryBytes(
    path: string,
    request: Uint8Array,
    header: HeaderInit | undefined,
    timeoutMs: number | undefined,
  ): Promise<Buffer>;
  close(): void;
}

const identity = (bytes: Buffer) => bytes;
const asBuffer = (bytes: Uint8Array) =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * The control plane's gRPC channel reconnects on this schedule once a connection is lost: the
 * SDK's own reconnect loop (control-plane.ts) decides when to ask again, so the channel must not
 * hold it back with grpc-js's default back-off of up to two minutes.
 */
const CHANNEL_INITIAL_RECONNECT_MS = 100;
const CHANNEL_MAX_RECONNECT_MS = 5_000;

function metadataOf(
  fixed: Readonly<Record<string, string>>,
  header: HeaderInit | undefined,
): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const key in fixed) metadata.set(key, fixed[key] as string);
  if (header !== undefined) {
    for (const [key, value] of new Headers(header)) metadata.set(key, value);
  }
  return metadata;
}

function headersOf(metadata: grpc.Metadata | undefined): Headers {
  const headers = new Headers();
  if (metadata === undefined) return headers;
  for (const [key, value] of Object.entries(metadata.getMap())) {
    if (typeof value === "string") headers.set(key, value);
  }
  return headers;
}

function connectErrorOf(err: unknown): ConnectError {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === "number") {
    // gRPC status numbers are Connect's codes.
    return new ConnectError(
      e.details ?? "",
      e.code as number as Code,
      headersOf(e.metadata),
      [],
      err,
    );
  }
  return ConnectError.from(err);
}

function codec<M extends DescMessage>(schema: M) {
  return {
    serialize: (message: MessageShape<M>) => Buffer.from(toBinary(schema, message)),
    deserialize: (bytes: Buffer) => fromBinary(schema, bytes),
  };
}

/**
 * A Connect transport that carries gRPC over @grpc/grpc-js, for the SDK's calls to a cleartext
 * control plane. Generated clients (`createClient`) work unchanged on it. It exists for speed: a
 * grpc-js client completes a unary call in about half the time of Connect-node's gRPC transport
 * on the same server (`npm run bench` prints both), and the strict Acquire path pays that on
 * every attempt. Only what the contract uses is carried: unary and server-streaming calls. For
 * https:// control planes the SDK keeps Connect's transport, whose TLS errors it can tell apart
 * (and the server answers TLS with Connect-node anyway, see server/transport.ts).
 */
export function createGrpcJsTransport(
  baseUrl: string,
  /** Sent with every call, e.g. the authorization header. */
  fixedHeaders: Readonly<Record<string, string>> = {},
): GrpcJsTransport {
  const url = new URL(baseUrl);
  const target = url.port === "" ? `${url.hostname}:80` : url.host;
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": CHANNEL_INITIAL_RECONNECT_MS,
    "grpc.max_reconnect_backoff_ms": CHANNEL_MAX_RECONNECT_MS,
  });
  const optionsOf = (timeoutMs: number | undefined): grpc.CallOptions =>
    timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };

  return {
    unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: MessageInitShape<I>,
    ) {
      const request = codec(method.input);
      const response = codec(method.output);
      return new Promise<UnaryResponse<I, O>>((resolve, reject) => {
        if (signal?.aborted) {
          reject(new ConnectError("the call was aborted", Code.Canceled));
          return;
        }
        let responseHeader = new Headers();
        const call = client.makeUnaryRequest(
          `/${method.parent.typeName}/${method.name}`,
          request.serialize,
          response.deserialize,
          create(method.input, input),
          metadataOf(fixedHeaders, header),
          optionsOf(timeoutMs),
          (err, message) => {
            signal?.removeEventListener("abort", cancel);
            if (err !== null || message === undefined) {
              reject(connectErrorOf(err));
              return;
            }
            resolve({
              stream: false,
              service: method.parent,
              method,
              header: responseHeader,
              trailer: new Headers(),
              message,
            });
          },
        );
        call.on("metadata", (metadata) => {
          responseHeader = headersOf(metadata);
        });
        const cancel = () => call.cancel();
        signal?.addEventListener("abort", cancel, { once: true });
      });
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
    ): Promise<StreamResponse<I, O>> {
      if (method.methodKind !== "server_streaming") {
        throw new ConnectError(`${method.methodKind} calls are not supported`, Code.Unimplemented);
      }
      let first: MessageInitShape<I> | undefined;
      for await (const message of input) {
        first = message;
        break;
      }
      const request = codec(method.input);
      const response = codec(method.output);
      const call = client.makeServerStreamRequest(
        `/${method.parent.typeName}/${method.name}`,
        request.serialize,
        response.deserialize,
        create(method.input, first),
        metadataOf(fixedHeaders, header),
        optionsOf(timeoutMs),
      );
      const cancel = () => call.cancel();
      signal?.addEventListener("abort", cancel, { once: true });
      async function* messages(): AsyncGenerator<MessageShape<O>> {
        try {
          for await (const message of call) yield message as MessageShape<O>;
        } catch (err) {
          throw connectErrorOf(err);
        } finally {
          signal?.removeEventListener("abort", cancel);
          call.cancel();
        }
      }
      return {
        stream: true,
        service: method.parent,
        method,
        header: new Headers(),
        trailer: new Headers(),
        message: messages(),
      };
    },

    unaryBytes(path, request, header, timeoutMs) {
      return new Promise<Buffer>((resolve, reject) => {
        client.makeUnaryRequest(
          path,
          asBuffer,
          identity,
          request,
          metadataOf(fixedHeaders, header),
          optionsOf(timeoutMs),
          (err, response) => {
            if (err !== null || response === undefined) reject(connectErrorOf(err));
            else resolve(response);
          },
        );
      });
    },

    close: () => client.close(),
  };
}
