/**
 * The baseline of the Acquire benchmark: a bare @grpc/grpc-js server in its own process that
 * answers BreakerService/Acquire with a fixed ALLOW, encoding with the same generated codecs.
 * Prints its port on stdout.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  AcquireDecision,
  type AcquireRequest,
  AcquireRequestSchema,
  type AcquireResponse,
  AcquireResponseSchema,
} from "../gen/bulwark/v1/breaker_pb.ts";

const answer = create(AcquireResponseSchema, { decision: AcquireDecision.ALLOW });
const server = new grpc.Server();
server.addService(
  {
    Acquire: {
      path: "/bulwark.v1.BreakerService/Acquire",
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: AcquireRequest) => Buffer.from(toBinary(AcquireRequestSchema, m)),
      requestDeserialize: (b: Buffer) => fromBinary(AcquireRequestSchema, b),
      responseSerialize: (m: AcquireResponse) => Buffer.from(toBinary(AcquireResponseSchema, m)),
      responseDeserialize: (b: Buffer) => fromBinary(AcquireResponseSchema, b),
    },
  },
  {
    Acquire: (
      _call: grpc.ServerUnaryCall<AcquireRequest, AcquireResponse>,
      callback: grpc.sendUnaryData<AcquireResponse>,
    ) => callback(null, answer),
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err !== null) throw err;
  process.stdout.write(`${port}\n`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
