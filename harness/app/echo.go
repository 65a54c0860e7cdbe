package app

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
)

// The gRPC echo service, written by hand so that nothing needs protoc. Its
// messages are protobuf on the wire (field 1: the request ID's wire form,
// "hsid=" + 16 hex digits; field 2: payload bytes), so the ID sits in the
// first bytes of every request message where the probe looks for it.
const (
	EchoService = "hopscope.Echo"
	EchoMethod  = "/hopscope.Echo/Call"
	// CodecName is the content-subtype of the echo messages
	// (content-type application/grpc+hopscope). It does not override "proto".
	CodecName = "hopscope"
)

// Message is the request and the response of the echo service.
type Message struct {
	ID      string // the request ID in wire form (reqid.Append), or ""
	Payload []byte
}

// AppendMarshal appends the protobuf encoding of m to b.
func (m *Message) AppendMarshal(b []byte) []byte {
	if m.ID != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, m.ID)
	}
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	return b
}

// Unmarshal decodes b into m, skipping unknown fields. Payload aliases b.
func (m *Message) Unmarshal(b []byte) error {
	*m = Message{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("echo message: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("echo message field %d: %w", num, protowire.ParseError(n))
			}
			if num == 1 {
				m.ID = string(v)
			} else {
				m.Payload = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("echo message field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// Codec marshals *Message; it is registered under CodecName.
type Codec struct{}

func (Codec) Name() string { return CodecName }

func (Codec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*Message)
	if !ok {
		return nil, fmt.Errorf("hopscope codec: cannot marshal %T", v)
	}
	return m.AppendMarshal(make([]byte, 0, 32+len(m.ID)+len(m.Payload))), nil
}

func (Codec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*Message)
	if !ok {
		return fmt.Errorf("hopscope codec: cannot unmarshal into %T", v)
	}
	// gRPC may reuse data after Unmarshal returns: keep a copy.
	return m.Unmarshal(append([]byte(nil), data...))
}

func init() { encoding.RegisterCodec(Codec{}) }

// EchoServer is the server side of the echo service.
type EchoServer interface {
	Call(ctx context.Context, req *Message) (*Message, error)
}

// EchoServiceDesc describes the echo service for grpc.Server.RegisterService.
var EchoServiceDesc = grpc.ServiceDesc{
	ServiceName: EchoService,
	HandlerType: (*EchoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(Message)
			if err := dec(in); err != nil {
				return nil, err
			}
			if icpt == nil {
				return srv.(EchoServer).Call(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}
			return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(EchoServer).Call(ctx, req.(*Message))
			})
		},
	}},
	Metadata: "hopscope/echo",
}

// CallOptions are the options a client passes to Invoke(ctx, EchoMethod, ...).
func CallOptions() []grpc.CallOption {
	return []grpc.CallOption{grpc.CallContentSubtype(CodecName)}
}
